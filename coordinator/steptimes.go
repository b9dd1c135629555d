package coordinator

import (
	"time"

	"github.com/ttftlab/ttftlab/internal/specerr"
)

// Bounds of an experiment step's measured duration and warm-up (kvscale,
// prefix and presets: their requests' level_duration_ms and warmup_ms).
const (
	minStepDuration = 500 * time.Millisecond
	maxStepDuration = time.Hour
	maxStepWarmup   = time.Hour
)

// checkStepTimes checks a step's duration and warm-up, after the spec's
// defaults filled in zeros, so a negative value was given as such. The
// errors are specerr.FieldErrors under the request fields level_duration_ms
// and warmup_ms, so that a gRPC client and the CLI (through its rename
// table) see the field they set.
func checkStepTimes(level, warmup time.Duration) []error {
	var errs []error
	switch {
	case level < 0:
		errs = append(errs, specerr.New("level_duration_ms", level, "is negative: give a duration in %v..%v, or 0 for the default", minStepDuration, maxStepDuration))
	case level < minStepDuration || level > maxStepDuration:
		errs = append(errs, specerr.New("level_duration_ms", level, "is out of range: use %v..%v", minStepDuration, maxStepDuration))
	}
	switch {
	case warmup < 0:
		errs = append(errs, specerr.New("warmup_ms", warmup, "is negative: give a duration in 0..%v (0 for the default)", maxStepWarmup))
	case warmup > maxStepWarmup:
		errs = append(errs, specerr.New("warmup_ms", warmup, "is out of range: use 0..%v", maxStepWarmup))
	}
	return errs
}
