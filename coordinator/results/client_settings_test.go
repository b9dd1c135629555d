package results

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestClientSettingsRows: the client's transport and clock become settings
// rows after the load model's; a run recorded without them has none, and
// the table stays empty when nothing else is set either.
func TestClientSettingsRows(t *testing.T) {
	if rows := ClientSettings("", ""); len(rows) != 0 {
		t.Errorf("ClientSettings of an old run = %v, want no rows", rows)
	}
	if got := SettingsTable(nil, nil, nil, ClientSettings("", "")...); got != "" {
		t.Errorf("SettingsTable with nothing set = %q, want empty", got)
	}
	got := SettingsTable(json.RawMessage(`{"kind":"closed","concurrency":4}`), nil, nil, ClientSettings("h2", "read_return")...)
	want := "| setting | value |\n|---|---|\n" +
		"| arrival | closed |\n| concurrency | 4 |\n" +
		"| HTTP transport | h2 |\n| first-token clock | read_return (the time the read returned) |\n"
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("SettingsTable (-want +got):\n%s", diff)
	}
	// A clock this version does not know is shown as recorded.
	if rows := ClientSettings("h1", "ptp|x"); len(rows) != 2 || rows[1].Value != "ptp|x" {
		t.Errorf("ClientSettings with an unknown clock = %v, want it shown as recorded", rows)
	}
}
