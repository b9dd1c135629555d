//go:build !cgo

package gpunode

// noGPU is ignored without cgo: NVML is always unavailable.
func noGPU() NVML { return nil }

func benchNVML() NVML { return nil }
