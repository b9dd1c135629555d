package coordinator

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/ttftlab/ttftlab/internal/specerr"
	"google.golang.org/protobuf/proto"
)

func TestSelectionValidate(t *testing.T) {
	tests := []struct {
		name     string
		sel      Selection
		allowAll bool
		field    string // the field the error names; "" for none
	}{
		{name: "zero", sel: Selection{}},
		{name: "name", sel: Selection{GPUNode: "gpunode-1"}},
		{name: "selector", sel: Selection{Selector: map[string]string{"gpu": "NVIDIA-H200"}, AgentsSelector: map[string]string{"rack": "r1"}}},
		{name: "all with a selector, in a fleet experiment", sel: Selection{All: true, Selector: map[string]string{"gpu": "h200"}}, allowAll: true},
		{name: "all in a one-node experiment", sel: Selection{All: true}, field: "selection.all_gpunodes"},
		{name: "name and selector", sel: Selection{GPUNode: "g", Selector: map[string]string{"gpu": "h200"}}, field: "selection.gpunode"},
		{name: "name and all", sel: Selection{GPUNode: "g", All: true}, allowAll: true, field: "selection.gpunode"},
		{name: "control characters in the name", sel: Selection{GPUNode: "g\x1b[2J"}, field: "selection.gpunode"},
		{name: "bad selector from the wire", sel: Selection{Selector: map[string]string{"gpu model": "x"}}, field: "selection.selector"},
		{name: "bad agents selector from the wire", sel: Selection{AgentsSelector: map[string]string{"rack": "r 1"}}, field: "selection.agents_selector"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.sel.Validate(tt.allowAll)
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			var fe *specerr.FieldError
			if !errors.As(err, &fe) || fe.Field != tt.field {
				t.Fatalf("Validate = %v, want an error on %s", err, tt.field)
			}
		})
	}
}

func TestSelectionProtoRoundTrip(t *testing.T) {
	for _, sel := range []Selection{
		{GPUNode: "g"},
		{Selector: map[string]string{"gpu": "h200"}, All: true, AgentsSelector: map[string]string{"team": "a"}},
	} {
		p := sel.Proto()
		back := SelectionFromProto(p)
		if !proto.Equal(back.Proto(), p) {
			t.Errorf("round trip of %+v: %v, want %v", sel, back.Proto(), p)
		}
	}
	if p := (Selection{}).Proto(); p != nil {
		t.Errorf("zero selection as proto = %v, want nil (a request without a selection)", p)
	}
	if s := SelectionFromProto(nil); !s.IsZero() {
		t.Errorf("nil proto = %+v, want the zero Selection", s)
	}
}

// TestSelectionThatMatchesNothingFails checks that a run whose selection
// matches no member waits for the discovery timeout and then fails with
// what it asked for and what exists, so that the fix is in the message.
func TestSelectionThatMatchesNothingFails(t *testing.T) {
	ms := staticMembers{
		gpuMember("gpu-a", map[string]string{"gpu": "NVIDIA-H200", "gpus": "8"}),
		gpuMember("gpu-b", map[string]string{"gpu": "NVIDIA-L4", "gpus": "1"}),
		agentMember("agent-1", map[string]string{"host": "load1"}),
	}
	tests := []struct {
		name string
		sel  Selection
		want []string
	}{
		{"unknown name", Selection{GPUNode: "gpu-c"}, []string{`no gpunode is named "gpu-c"`, "the gpunodes are: gpu-a, gpu-b"}},
		{"selector", Selection{Selector: map[string]string{"gpu": "NVIDIA-A100"}},
			[]string{"no gpunode matches selector gpu=NVIDIA-A100", "gpu-a{gpu=NVIDIA-H200,gpus=8}", "gpu-b{gpu=NVIDIA-L4,gpus=1}"}},
		{"agents selector", Selection{AgentsSelector: map[string]string{"host": "load9"}},
			[]string{"no agent matches agents selector host=load9", "agent-1{host=load1}"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.OutDir = t.TempDir()
			cfg.DiscoveryTimeout = 200 * time.Millisecond
			c := New(cfg, ms, fakeDialer{gpu: &fakeGPU{}, agent: &fakeAgent{ttft: coldWarm}}, nil)
			start := time.Now()
			_, err := c.RunBaseline(context.Background(), BaselineSpec{Selection: tt.sel}, nil)
			if err == nil {
				t.Fatal("RunBaseline succeeded, want a selection error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if waited := time.Since(start); waited < cfg.DiscoveryTimeout {
				t.Errorf("failed after %v, before the discovery timeout %v", waited, cfg.DiscoveryTimeout)
			}
			if runs := c.Runs(); len(runs) != 1 || runs[0].State != RunDone || runs[0].Status != "failed" {
				t.Errorf("runs = %+v, want one done and failed", runs)
			}
		})
	}
}

// TestBaselineRunsOnTheSelectedGPUNode checks that the selection, not the
// order of the member list, picks the gpunode.
func TestBaselineRunsOnTheSelectedGPUNode(t *testing.T) {
	ms := staticMembers{gpuMember("gpu-a", map[string]string{"gpu": "h200"}), gpuMember("gpu-b", map[string]string{"gpu": "l4"}), agentMember("a", nil)}
	tests := []struct {
		name string
		sel  Selection
		want string
	}{
		{"by name", Selection{GPUNode: "gpu-b"}, "gpu-b:1"},
		{"by selector", Selection{Selector: map[string]string{"gpu": "l4"}}, "gpu-b:1"},
		{"any", Selection{}, "gpu-a:1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			used := map[string]bool{}
			d := recordingDialer{addrDialer: addrDialer{gpus: map[string]GPUNode{"gpu-a:1": &fakeGPU{}, "gpu-b:1": &fakeGPU{}}, agents: map[string]Agent{"a:1": &fakeAgent{ttft: coldWarm}}}, used: used}
			cfg := DefaultConfig()
			cfg.OutDir = t.TempDir()
			c := New(cfg, ms, d, nil)
			if _, err := c.RunBaseline(context.Background(), BaselineSpec{WarmRuns: 1, Selection: tt.sel}, nil); err != nil {
				t.Fatal(err)
			}
			if len(used) != 1 || !used[tt.want] {
				t.Errorf("dialed gpunodes %v, want only %s", used, tt.want)
			}
		})
	}
}

type recordingDialer struct {
	addrDialer
	used map[string]bool
}

func (d recordingDialer) GPUNode(ctx context.Context, addr string) (GPUNode, io.Closer, error) {
	d.used[addr] = true
	return d.addrDialer.GPUNode(ctx, addr)
}
