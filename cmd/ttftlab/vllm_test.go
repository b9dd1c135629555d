package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestVLLMParseLog(t *testing.T) {
	golden := filepath.Join("..", "..", "internal", "vllmlog", "testdata", "v0.9-v1-noprefix-runai-model-streamer-67")
	var out, errb bytes.Buffer
	if err := runVLLM(t.Context(), []string{"parse-log", golden + ".log"}, &out, &errb); err != nil {
		t.Fatalf("parse-log: %v (stderr %s)", err, errb.String())
	}
	if strings.Count(out.String(), "\n") != 1 {
		t.Errorf("output is not one JSON line: %q", out.String())
	}
	var got, want map[string]any
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("output %q: %v", out.String(), err)
	}
	b, err := os.ReadFile(golden + ".json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	if len(got) != 12 || got["first_to_ready_s"] != 45.0 || got["kv_cache_tokens"] != 1131008.0 || got["error"] != nil {
		t.Errorf("got %v", got)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
}

func TestVLLMParseLogErrors(t *testing.T) {
	for _, args := range [][]string{nil, {"nope"}, {"parse-log"}, {"parse-log", "a", "b"}, {"parse-log", filepath.Join(t.TempDir(), "missing.log")}} {
		var out, errb bytes.Buffer
		if err := runVLLM(t.Context(), args, &out, &errb); err == nil {
			t.Errorf("runVLLM(%q) = nil, want an error", args)
		}
	}
}
