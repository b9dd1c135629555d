package membership

import (
	"fmt"
	"maps"
	"strings"
	"testing"
)

func TestParseSelector(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want map[string]string
		err  string // a part of the error, when one is expected
	}{
		{name: "empty selects all", in: "", want: nil},
		{name: "one term", in: "gpu=NVIDIA-H200", want: map[string]string{"gpu": "NVIDIA-H200"}},
		{name: "two terms with spaces", in: "gpu=h200, rack=r12", want: map[string]string{"gpu": "h200", "rack": "r12"}},
		{name: "empty value", in: "spare=", want: map[string]string{"spare": ""}},
		{name: "no equals", in: "gpu", err: `label "gpu" is not key=value`},
		{name: "bad key charset", in: "gpu model=h200", err: `label key "gpu model"`},
		{name: "bad value charset", in: "gpu=h200;rm", err: `value "h200;rm"`},
		{name: "key ends with dash", in: "gpu-=x", err: `label key "gpu-"`},
		{name: "value too long", in: "gpu=" + strings.Repeat("x", 64), err: "64 characters"},
		{name: "conflicting terms", in: "gpu=a,gpu=b", err: "gpu=a and gpu=b"},
		{name: "empty term", in: "gpu=a,,rack=b", err: `label "" is not key=value`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSelector(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ParseSelector(%q) error %v, want one containing %q", tt.in, err, tt.err)
				}
				return
			}
			if err != nil || !maps.Equal(got, tt.want) {
				t.Fatalf("ParseSelector(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestMatchesAndSanitize(t *testing.T) {
	labels := map[string]string{"gpu": "NVIDIA-H200", "gpus": "8", "rack": "r12"}
	for _, tt := range []struct {
		name string
		sel  map[string]string
		want bool
	}{
		{"nil selector", nil, true},
		{"one term", map[string]string{"gpu": "NVIDIA-H200"}, true},
		{"all terms", map[string]string{"gpu": "NVIDIA-H200", "rack": "r12"}, true},
		{"wrong value", map[string]string{"gpu": "NVIDIA-A100"}, false},
		{"missing key", map[string]string{"zone": "a"}, false},
		{"empty value needs the key", map[string]string{"zone": ""}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := Matches(labels, tt.sel); got != tt.want {
				t.Errorf("Matches(%v) = %v, want %v", tt.sel, got, tt.want)
			}
		})
	}
	for in, want := range map[string]string{
		"NVIDIA H200":             "NVIDIA-H200",
		"NVIDIA A100-SXM4-80GB":   "NVIDIA-A100-SXM4-80GB",
		" host (lab) ":            "host-lab",
		strings.Repeat("a", 70):   strings.Repeat("a", 63),
		"550.54.15":               "550.54.15",
		"gpu-box.example.com.":    "gpu-box.example.com",
		"\x00weird\xffname\u00e9": "weird-name",
	} {
		got := SanitizeLabelValue(in)
		if got != want || ValidateLabelValue("k", got) != nil {
			t.Errorf("SanitizeLabelValue(%q) = %q, want %q (valid)", in, got, want)
		}
	}
}

// TestMetaLabelsLimits checks the refusals at start: too many labels, an
// invalid one, and labels that push the metadata over 512 bytes, each
// error naming the label to fix.
func TestMetaLabelsLimits(t *testing.T) {
	many := map[string]string{}
	for i := range MaxLabels + 1 {
		many[fmt.Sprintf("k%d", i)] = "v"
	}
	big := map[string]string{}
	for i := range 8 {
		big[fmt.Sprintf("key%d", i)] = strings.Repeat("v", 50)
	}
	big["key7"] = strings.Repeat("w", 60)
	tests := []struct {
		name   string
		labels map[string]string
		err    string
	}{
		{"too many", many, "17 labels"},
		{"invalid key", map[string]string{"bad key": "v"}, `label key "bad key"`},
		{"invalid value", map[string]string{"rack": "r 12"}, `label rack: value "r 12"`},
		{"oversize names the longest", big, `the longest is "key7=` + strings.Repeat("w", 60) + `"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := New(Config{Name: "x", BindAddr: "127.0.0.1", Fast: true,
				Meta: Meta{Role: RoleGPUNode, GRPCAddr: "127.0.0.1:1234", Labels: tt.labels}}, nil)
			if err == nil {
				n.Close()
				t.Fatal("New succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tt.err) {
				t.Errorf("error %q, want one containing %q", err, tt.err)
			}
		})
	}
}

// TestLabelsTravelOverGossip checks that the labels a node announces reach
// the others unchanged, and that a node announcing invalid labels (as a
// hostile or newer peer could) is left out of the view.
func TestLabelsTravelOverGossip(t *testing.T) {
	key := []byte("0123456789abcdef")
	c := startNode(t, "coord", RoleCoordinator, key)
	want := map[string]string{LabelGPU: "NVIDIA-H200", LabelGPUCount: "8", LabelGPUMemGiB: "140", LabelDriver: "550.54.15", LabelHost: "gpu-box-1", "rack": "r12"}
	g, err := New(Config{Name: "gpu-1", BindAddr: "127.0.0.1", Fast: true, SecretKey: key,
		Meta: Meta{Role: RoleGPUNode, GRPCAddr: "127.0.0.1:1234", Labels: want}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	if _, err := g.Join([]string{c.Addr()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "gpu-1 in view", func() bool { return len(ByRole(c.Members(), RoleGPUNode)) == 1 })
	if got := ByRole(c.Members(), RoleGPUNode)[0].Labels; !maps.Equal(got, want) {
		t.Errorf("labels over gossip = %v, want %v", got, want)
	}

	// A peer whose metadata carries a label this version refuses is not
	// listed; decodeMeta says why.
	if _, err := decodeMeta([]byte(`{"r":"gpunode","a":"127.0.0.1:1","v":1,"l":{"gpu":"h200 <script>"}}`)); err == nil || !strings.Contains(err.Error(), "label gpu") {
		t.Errorf("decodeMeta of a bad label: %v, want an error naming label gpu", err)
	}
}
