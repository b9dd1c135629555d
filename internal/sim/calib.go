package sim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// Duration is a time.Duration written in JSON as a Go duration string
// ("30us", "1.2ms", "9s").
type Duration time.Duration

// UnmarshalJSON parses a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a duration string such as \"30us\" or \"1.2ms\", got %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	if v < 0 {
		return fmt.Errorf("duration %q must not be negative", s)
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes the duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// Calibration overrides any parameter of the simulator's models; a nil
// field keeps the built-in default. It is read from a JSON file
// (--calibration) whose unknown keys are refused; see docs/sim.md for the
// full list and an example.
type Calibration struct {
	Perf              *PerfCalibration    `json:"perf,omitempty"`
	Startup           *StartupCalibration `json:"startup,omitempty"`
	Memory            *MemoryCalibration  `json:"memory,omitempty"`
	GPU               *GPUCalibration     `json:"gpu,omitempty"`
	FirstRequestDelay *Duration           `json:"first_request_delay,omitempty"`
}

// PerfCalibration overrides PerfParams.
type PerfCalibration struct {
	EtaMFU         *float64  `json:"eta_mfu,omitempty"`
	EtaBW          *float64  `json:"eta_bw,omitempty"`
	TauLayer       *Duration `json:"tau_layer,omitempty"`
	TauLayerEager  *Duration `json:"tau_layer_eager,omitempty"`
	TGPU0          *Duration `json:"t_gpu0,omitempty"`
	TStepCPU       *Duration `json:"t_step_cpu,omitempty"`
	TAPI           *Duration `json:"t_api,omitempty"`
	MaxCaptureSize *int      `json:"max_capture_size,omitempty"`
	// AsyncScheduling models vLLM's --async-scheduling (see PerfParams).
	AsyncScheduling *bool `json:"async_scheduling,omitempty"`
}

// StartupCalibration overrides StartupParams. Speeds are in bytes/s.
type StartupCalibration struct {
	Bootstrap        *Duration `json:"bootstrap,omitempty"`
	DiskReadBps      *float64  `json:"disk_read_bps,omitempty"`
	PageCacheReadBps *float64  `json:"page_cache_read_bps,omitempty"`
	WeightsFixed     *Duration `json:"weights_fixed,omitempty"`
	HostToDeviceBps  *float64  `json:"host_to_device_bps,omitempty"`
	ModelInit        *Duration `json:"model_init,omitempty"`
	Dynamo           *Duration `json:"dynamo,omitempty"`
	CompileCold      *Duration `json:"compile_cold,omitempty"`
	CompileWarm      *Duration `json:"compile_warm,omitempty"`
	MemoryProfile    *Duration `json:"memory_profile,omitempty"`
	GraphCapture     *Duration `json:"graph_capture,omitempty"`
	APIStartup       *Duration `json:"api_startup,omitempty"`
}

// MemoryCalibration overrides MemoryParams.
type MemoryCalibration struct {
	NonTorchGiB       *float64 `json:"non_torch_gib,omitempty"`
	PeakActivationGiB *float64 `json:"peak_activation_gib,omitempty"`
}

// GPUCalibration overrides the selected GPU's datasheet figures.
type GPUCalibration struct {
	TotalGiB     *float64 `json:"total_gib,omitempty"`
	PeakFLOPS    *float64 `json:"peak_flops,omitempty"`
	BandwidthBps *float64 `json:"bandwidth_bps,omitempty"`
	EtaMFU       *float64 `json:"eta_mfu,omitempty"`
}

// LoadCalibration reads a calibration file. Unknown keys, trailing data and
// malformed values are errors that name the file.
func LoadCalibration(path string) (*Calibration, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--calibration: %w", err)
	}
	c, err := ParseCalibration(b)
	if err != nil {
		return nil, fmt.Errorf("--calibration %s: %w", path, err)
	}
	return c, nil
}

// ParseCalibration parses a calibration document.
func ParseCalibration(b []byte) (*Calibration, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var c Calibration
	if err := dec.Decode(&c); err != nil {
		return nil, err
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		return nil, errors.New("trailing data after the JSON object")
	}
	if g := c.GPU; g != nil {
		for name, v := range map[string]*float64{"total_gib": g.TotalGiB, "peak_flops": g.PeakFLOPS, "bandwidth_bps": g.BandwidthBps} {
			if v != nil && *v <= 0 {
				return nil, fmt.Errorf("gpu.%s %v must be positive", name, *v)
			}
		}
		if g.EtaMFU != nil && (*g.EtaMFU <= 0 || *g.EtaMFU > 1) {
			return nil, fmt.Errorf("gpu.eta_mfu %v must be in (0, 1]", *g.EtaMFU)
		}
	}
	if s := c.Startup; s != nil {
		for name, v := range map[string]*float64{"disk_read_bps": s.DiskReadBps, "page_cache_read_bps": s.PageCacheReadBps, "host_to_device_bps": s.HostToDeviceBps} {
			if v != nil && *v <= 0 {
				return nil, fmt.Errorf("startup.%s %v must be positive", name, *v)
			}
		}
	}
	if m := c.Memory; m != nil {
		if (m.NonTorchGiB != nil && *m.NonTorchGiB < 0) || (m.PeakActivationGiB != nil && *m.PeakActivationGiB < 0) {
			return nil, errors.New("memory values must not be negative")
		}
	}
	return &c, nil
}

func setDur(dst *time.Duration, v *Duration) {
	if v != nil {
		*dst = time.Duration(*v)
	}
}

func setF(dst *float64, v *float64) {
	if v != nil {
		*dst = *v
	}
}

// Apply writes every field set in c into cfg (perf, startup, memory and
// first-request delay). GPU overrides are applied when the config resolves
// its GPU, so Apply stores c in cfg.Calibration as well.
func (c *Calibration) Apply(cfg *Config) {
	if c == nil {
		return
	}
	cfg.Calibration = c
	if p := c.Perf; p != nil {
		setF(&cfg.Perf.EtaMFU, p.EtaMFU)
		setF(&cfg.Perf.EtaBW, p.EtaBW)
		setDur(&cfg.Perf.TauLayer, p.TauLayer)
		setDur(&cfg.Perf.TauLayerEager, p.TauLayerEager)
		setDur(&cfg.Perf.TGPU0, p.TGPU0)
		setDur(&cfg.Perf.TStepCPU, p.TStepCPU)
		setDur(&cfg.Perf.TAPI, p.TAPI)
		if p.MaxCaptureSize != nil {
			cfg.Perf.MaxCaptureSize = *p.MaxCaptureSize
		}
		if p.AsyncScheduling != nil {
			cfg.Perf.AsyncScheduling = *p.AsyncScheduling
		}
	}
	if s := c.Startup; s != nil {
		st := &cfg.Startup
		setDur(&st.Bootstrap, s.Bootstrap)
		setF(&st.DiskReadBps, s.DiskReadBps)
		setF(&st.PageCacheReadBps, s.PageCacheReadBps)
		setDur(&st.WeightsFixed, s.WeightsFixed)
		setF(&st.HostToDeviceBps, s.HostToDeviceBps)
		setDur(&st.ModelInit, s.ModelInit)
		setDur(&st.Dynamo, s.Dynamo)
		setDur(&st.CompileCold, s.CompileCold)
		setDur(&st.CompileWarm, s.CompileWarm)
		setDur(&st.MemoryProfile, s.MemoryProfile)
		setDur(&st.GraphCapture, s.GraphCapture)
		setDur(&st.APIStartup, s.APIStartup)
	}
	if m := c.Memory; m != nil {
		setF(&cfg.Memory.NonTorchGiB, m.NonTorchGiB)
		setF(&cfg.Memory.PeakActivationGiB, m.PeakActivationGiB)
	}
	setDur(&cfg.FirstRequestDelay, c.FirstRequestDelay)
}

// applyGPU overrides g's figures with the calibration's.
func (c *Calibration) applyGPU(g GPU) GPU {
	if c == nil || c.GPU == nil {
		return g
	}
	setF(&g.TotalGiB, c.GPU.TotalGiB)
	setF(&g.PeakFLOPS, c.GPU.PeakFLOPS)
	setF(&g.BandwidthBps, c.GPU.BandwidthBps)
	setF(&g.EtaMFU, c.GPU.EtaMFU)
	return g
}
