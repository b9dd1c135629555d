//go:build !cgo

package gpunode

import "log/slog"

// NVML stands in for nvml.Interface in builds without cgo, where go-nvml
// cannot be compiled. Any value is ignored.
type NVML = any

// openGPUs reports NVML unavailable: go-nvml loads libnvidia-ml through
// cgo, so a build without cgo cannot use it.
func openGPUs(_ NVML, _ *slog.Logger) *gpus {
	return &gpus{reason: "NVML not available: built without cgo"}
}
