package membership

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Label limits. Labels travel in the node's gossip metadata, which must fit
// in memberlist's 512 bytes next to the role, gRPC address and boot
// identifier, so keys are short and the count is capped.
const (
	// MaxLabels is the most labels one node may announce.
	MaxLabels = 16
	// MaxLabelKeyLen and MaxLabelValueLen bound a label's key and value,
	// as Kubernetes bounds a label's name and value (63).
	MaxLabelKeyLen   = 63
	MaxLabelValueLen = 63
)

// Well-known label keys. gpunodes set the first five from NVML (or from
// the simulated GPU of their sim profile); agents set host. An operator's
// --label with the same key replaces the detected value.
const (
	LabelGPU       = "gpu"    // GPU model, e.g. NVIDIA-H200 or sim-h200
	LabelGPUCount  = "gpus"   // number of GPUs
	LabelGPUMemGiB = "gpumem" // memory of one GPU, in whole GiB
	LabelDriver    = "driver" // NVIDIA driver version
	LabelHost      = "host"   // host name
)

// ValidateLabelKey checks a label key: 1..63 characters of [A-Za-z0-9._-],
// beginning and ending with a letter or digit (a Kubernetes label name
// without the prefix).
func ValidateLabelKey(k string) error {
	if k == "" {
		return errors.New("label key is empty: use a name such as gpu or rack")
	}
	if len(k) > MaxLabelKeyLen {
		return fmt.Errorf("label key %.20q… is %d characters: use at most %d", k, len(k), MaxLabelKeyLen)
	}
	if !labelChars(k) {
		return fmt.Errorf("label key %q: use letters, digits, '.', '_' and '-', beginning and ending with a letter or digit", k)
	}
	return nil
}

// ValidateLabelValue checks the value of label k: empty, or 1..63
// characters of [A-Za-z0-9._-] beginning and ending with a letter or digit
// (a Kubernetes label value).
func ValidateLabelValue(k, v string) error {
	if v == "" {
		return nil
	}
	if len(v) > MaxLabelValueLen {
		return fmt.Errorf("label %s: value %.20q… is %d characters: use at most %d", k, v, len(v), MaxLabelValueLen)
	}
	if !labelChars(v) {
		return fmt.Errorf("label %s: value %q: use letters, digits, '.', '_' and '-', beginning and ending with a letter or digit", k, v)
	}
	return nil
}

// ValidateLabels checks a whole label set: at most MaxLabels labels, each
// key and value valid. Its error names the first offending label.
func ValidateLabels(labels map[string]string) error {
	if len(labels) > MaxLabels {
		return fmt.Errorf("%d labels: a node announces at most %d (they travel in 512 bytes of gossip metadata); drop some --label flags", len(labels), MaxLabels)
	}
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		if err := ValidateLabelKey(k); err != nil {
			return err
		}
		if err := ValidateLabelValue(k, labels[k]); err != nil {
			return err
		}
	}
	return nil
}

func labelChars(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if alnum {
			continue
		}
		if (c == '.' || c == '_' || c == '-') && i > 0 && i < len(s)-1 {
			continue
		}
		return false
	}
	return true
}

// SanitizeLabelValue turns a detected fact (a GPU's marketing name, a
// host name) into a valid label value: runs of other characters become one
// '-', the ends are trimmed and the result is cut to MaxLabelValueLen.
func SanitizeLabelValue(s string) string {
	var b strings.Builder
	dash := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' {
			b.WriteByte(c)
			dash = false
			continue
		}
		if !dash {
			b.WriteByte('-')
			dash = true
		}
	}
	out := b.String()
	if len(out) > MaxLabelValueLen {
		out = out[:MaxLabelValueLen]
	}
	return strings.Trim(out, "-._")
}

// ParseLabel parses one operator label, "key=value".
func ParseLabel(s string) (key, value string, err error) {
	k, v, ok := strings.Cut(s, "=")
	if !ok {
		return "", "", fmt.Errorf("label %q is not key=value: write it as --label rack=r12", s)
	}
	if err := ValidateLabelKey(k); err != nil {
		return "", "", fmt.Errorf("label %q: %w", s, err)
	}
	if err := ValidateLabelValue(k, v); err != nil {
		return "", "", fmt.Errorf("label %q: %w", s, err)
	}
	return k, v, nil
}

// ParseSelector parses a label selector, "k=v[,k=v]": a node matches when
// it has every label with the given value. The empty string selects
// everything (nil).
func ParseSelector(s string) (map[string]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	sel := map[string]string{}
	for _, part := range strings.Split(s, ",") {
		k, v, err := ParseLabel(strings.TrimSpace(part))
		if err != nil {
			return nil, fmt.Errorf("selector %q: %w", s, err)
		}
		if old, dup := sel[k]; dup && old != v {
			return nil, fmt.Errorf("selector %q asks for %s=%s and %s=%s: a label has one value, keep one", s, k, old, k, v)
		}
		sel[k] = v
	}
	if len(sel) > MaxLabels {
		return nil, fmt.Errorf("selector %q has %d terms: a node has at most %d labels", s, len(sel), MaxLabels)
	}
	return sel, nil
}

// FormatLabels writes labels as "k=v,k=v", sorted by key; "" when there
// are none.
func FormatLabels(labels map[string]string) string {
	parts := make([]string, 0, len(labels))
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		parts = append(parts, k+"="+labels[k])
	}
	return strings.Join(parts, ",")
}

// Matches reports whether labels has every key of selector with its value.
// An empty selector matches everything.
func Matches(labels, selector map[string]string) bool {
	for k, v := range selector {
		got, ok := labels[k]
		if !ok || got != v {
			return false
		}
	}
	return true
}
