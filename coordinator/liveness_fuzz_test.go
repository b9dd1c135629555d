package coordinator

import (
	"strings"
	"testing"
	"unicode/utf8"

	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"google.golang.org/protobuf/proto"
)

// FuzzEngineExitFromWire decodes an untrusted StreamSamplesResponse as the
// client does, and renders an engine exit as the run's error: nothing may
// panic, and the error stays one valid UTF-8 line of bounded length.
func FuzzEngineExitFromWire(f *testing.F) {
	seed, _ := proto.Marshal(&pb.StreamSamplesResponse{EngineExit: &pb.EngineExit{Pid: 7, ExitCode: -1, Signal: "SIGKILL", UptimeMs: 1234,
		LogTail: []string{"INFO ok", "ERROR \xff\nboom"}}})
	f.Add(seed)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		var m pb.StreamSamplesResponse
		if err := proto.Unmarshal(b, &m); err != nil {
			return
		}
		if err := validateSamplesResponse(&m); err != nil || m.GetEngineExit() == nil {
			return
		}
		s := (&EngineExitError{GPUNode: "g", Exit: m.GetEngineExit()}).Error()
		if strings.Contains(s, "\n") || !utf8.ValidString(s) {
			t.Errorf("error %q is not one valid line", s)
		}
		if len(s) > 2000 {
			t.Errorf("error is %d bytes long", len(s))
		}
	})
}
