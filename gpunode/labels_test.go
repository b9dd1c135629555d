package gpunode

import (
	"maps"
	"testing"

	"github.com/ttftlab/ttftlab/internal/membership"
)

func TestLabels(t *testing.T) {
	h200 := GPUInfo{Name: "NVIDIA H200 141GB HBM3e", MemoryTotalBytes: 144384 << 20}
	simProfiles := map[string]Profile{"sim": {Name: "sim", Kind: KindSim, Defaults: Knobs{GPU: "h200"}}, "vllm": {Name: "vllm", Kind: KindVLLM}}
	simMem := func(gpu string) (float64, bool) { return 139.8, gpu == "h200" }
	tests := []struct {
		name string
		info Info
		cfg  Config
		want map[string]string
	}{
		{"NVML, 8 GPUs", Info{Hostname: "dgx-01.lab", NVMLAvailable: true, DriverVersion: "550.54.15", GPUs: []GPUInfo{h200, h200, h200, h200, h200, h200, h200, h200}},
			Config{Profiles: simProfiles},
			map[string]string{"gpu": "NVIDIA-H200-141GB-HBM3e", "gpus": "8", "gpumem": "141", "driver": "550.54.15", "host": "dgx-01.lab"}},
		{"NVML, mixed models", Info{Hostname: "box", NVMLAvailable: true, GPUs: []GPUInfo{h200, {Name: "NVIDIA L4", MemoryTotalBytes: 23034 << 20}}},
			Config{}, map[string]string{"gpu": "mixed", "gpus": "2", "gpumem": "141", "host": "box"}},
		{"no NVML, sim profile", Info{Hostname: "laptop"}, Config{Profiles: simProfiles, SimGPUMemoryGiB: simMem},
			map[string]string{"gpu": "sim-h200", "gpus": "1", "gpumem": "140", "host": "laptop"}},
		{"no NVML, sim profile, memory unknown", Info{Hostname: "laptop"}, Config{Profiles: simProfiles},
			map[string]string{"gpu": "sim-h200", "gpus": "1", "host": "laptop"}},
		{"no NVML, no sim", Info{Hostname: "laptop"}, Config{Profiles: map[string]Profile{"vllm": {Kind: KindVLLM}}},
			map[string]string{"host": "laptop"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := &Node{cfg: tt.cfg, info: tt.info}
			got := n.Labels()
			if !maps.Equal(got, tt.want) {
				t.Errorf("Labels = %v, want %v", got, tt.want)
			}
			if err := membership.ValidateLabels(got); err != nil {
				t.Errorf("labels do not pass the gossip check: %v", err)
			}
		})
	}
}
