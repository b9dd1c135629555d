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
