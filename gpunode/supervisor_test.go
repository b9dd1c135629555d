package gpunode

import (
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ttftlabv1 "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
)

func TestRingKeepsTheLastLines(t *testing.T) {
	r := newRing(3)
	if got := r.tail(5); len(got) != 0 {
		t.Errorf("empty ring tail = %v", got)
	}
	for i := range 5 {
		r.add(LogLine{Text: strconv.Itoa(i)})
	}
	var got []string
	for _, l := range r.tail(10) {
		got = append(got, l.Text)
	}
	if diff := cmp.Diff([]string{"2", "3", "4"}, got); diff != "" {
		t.Errorf("tail(10) (-want +got):\n%s", diff)
	}
	if got := r.tail(1); len(got) != 1 || got[0].Text != "4" {
		t.Errorf("tail(1) = %v, want [4]", got)
	}
}

func TestMissingExecutableIsFailedPrecondition(t *testing.T) {
	n := newTestNode(t, func(c *Config) {
		c.Launcher = ExecLauncher
		c.Profiles = map[string]Profile{"missing": {
			Name: "missing", Kind: KindVLLM,
			Command:  []string{"/nonexistent/ttftlab-test-engine", "serve"},
			Defaults: Knobs{Model: "m"},
		}}
	})
	c := newTestClient(t, n)
	_, err := c.StartEngine(t.Context(), &ttftlabv1.StartEngineRequest{Profile: "missing"})
	if st := status.Convert(err); st.Code() != codes.FailedPrecondition {
		t.Errorf("StartEngine with a missing executable = %v, want FailedPrecondition", err)
	}
}
