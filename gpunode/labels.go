package gpunode

import (
	"maps"
	"math"
	"slices"
	"strconv"

	"github.com/ttftlab/ttftlab/internal/membership"
)

// Labels returns the labels this node announces in its gossip metadata, so
// that a run can select it (`--selector gpu=NVIDIA-H200`):
//
//   - with NVML: gpu (the first GPU's model, as a label value), gpus (the
//     count), gpumem (one GPU's memory in whole GiB) and driver;
//   - without NVML, on a node with a sim profile: gpu=sim-<GPU> from that
//     profile's simulated GPU, gpus=1 and, when Config.SimGPUMemoryGiB
//     knows the GPU, gpumem;
//   - host, the host name.
//
// GPUs of mixed models are announced as gpu=mixed.
func (n *Node) Labels() map[string]string {
	info := n.info
	l := map[string]string{}
	if h := membership.SanitizeLabelValue(info.Hostname); h != "" {
		l[membership.LabelHost] = h
	}
	if info.NVMLAvailable && len(info.GPUs) > 0 {
		model := info.GPUs[0].Name
		for _, g := range info.GPUs[1:] {
			if g.Name != model {
				model = "mixed"
			}
		}
		setLabel(l, membership.LabelGPU, model)
		l[membership.LabelGPUCount] = strconv.Itoa(len(info.GPUs))
		if m := info.GPUs[0].MemoryTotalBytes; m > 0 {
			l[membership.LabelGPUMemGiB] = strconv.FormatFloat(math.Round(float64(m)/(1<<30)), 'f', 0, 64)
		}
		setLabel(l, membership.LabelDriver, info.DriverVersion)
		return l
	}
	// No NVML: the simulated GPU of the first sim profile, by name.
	for _, name := range slices.Sorted(maps.Keys(n.cfg.Profiles)) {
		p := n.cfg.Profiles[name]
		if p.Kind != KindSim || p.Defaults.GPU == "" {
			continue
		}
		setLabel(l, membership.LabelGPU, "sim-"+p.Defaults.GPU)
		l[membership.LabelGPUCount] = "1"
		if f := n.cfg.SimGPUMemoryGiB; f != nil {
			if gib, ok := f(p.Defaults.GPU); ok && gib > 0 {
				l[membership.LabelGPUMemGiB] = strconv.FormatFloat(math.Round(gib), 'f', 0, 64)
			}
		}
		break
	}
	return l
}

// setLabel sets a detected fact as a label, made a valid label value; an
// empty result is left out.
func setLabel(l map[string]string, k, v string) {
	if v = membership.SanitizeLabelValue(v); v != "" {
		l[k] = v
	}
}
