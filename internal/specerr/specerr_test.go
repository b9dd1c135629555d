package specerr

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestRename(t *testing.T) {
	names := Table(map[string]string{"load.concurrency": "--concurrency", "generator": "--input-len"})
	base := errors.New("invalid spec")
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"direct", New("load.concurrency", 0, "is invalid: set it ≥ 1"), "--concurrency 0 is invalid: set it ≥ 1"},
		{"wrapped", fmt.Errorf("%w: %w", base, New("load.concurrency", 0, "is invalid")), "--concurrency 0 is invalid"},
		{"no value", New("load.concurrency", nil, "is missing"), "--concurrency is missing"},
		{"parent", New("generator.input_len.min", 3, "is too small"), "--input-len 3 is too small"},
		{"unmapped keeps field", fmt.Errorf("%w: %w", base, New("load.rate", 0, "is invalid")), "invalid spec: load.rate 0 is invalid"},
		{"plain", errors.New("boom"), "boom"},
		{"joined", errors.Join(New("load.concurrency", -1, "is negative"), errors.New("other")), "--concurrency -1 is negative\nother"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Rename(tt.err, names)
			if got.Error() != tt.want {
				t.Errorf("Rename = %q, want %q", got.Error(), tt.want)
			}
			var fe *FieldError
			if strings.HasPrefix(tt.want, "--") && !errors.As(got, &fe) {
				t.Error("renamed error does not unwrap to the FieldError")
			}
		})
	}
	if Rename(nil, names) != nil {
		t.Error("Rename(nil) is not nil")
	}
}

func TestRenameReferredFields(t *testing.T) {
	e := New("slo_ttft_ms", 900, "is above {max_ttft_ms} %g: keep {slo_ttft_ms} the tighter bound ({other} stays)", 500.0).Refer("max_ttft_ms", "slo_ttft_ms")
	if got, want := e.Error(), "slo_ttft_ms 900 is above max_ttft_ms 500: keep slo_ttft_ms the tighter bound ({other} stays)"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	names := Table(map[string]string{"slo_ttft_ms": "--slo-ttft-ms", "max_ttft_ms": "--max-ttft-ms"})
	got := Rename(errors.Join(e, errors.New("plain")), names).Error()
	want := "--slo-ttft-ms 900 is above --max-ttft-ms 500: keep --slo-ttft-ms the tighter bound ({other} stays)\nplain"
	if got != want {
		t.Errorf("renamed = %q, want %q", got, want)
	}
	// A referred field the table does not name keeps the spec's name.
	got = Rename(e, Table(map[string]string{"slo_ttft_ms": "--slo"})).Error()
	if want := "--slo 900 is above max_ttft_ms 500: keep --slo the tighter bound ({other} stays)"; got != want {
		t.Errorf("partly renamed = %q, want %q", got, want)
	}
}
