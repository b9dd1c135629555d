package main

import (
	"bytes"
	"encoding/json"
	"fmt"
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

func TestVLLMParseLogRefusesNonEngineInput(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, content string
		lines         int
	}{
		{"empty", "", 0},
		{"binary", "\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\n\x00\x01\x02\xff\xfe\n", 2},
		{"unrelated text", "hello\nworld\nthis is a shopping list\n", 3},
		{"json", `{"weights_load_s": 1}` + "\n", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_")+".log")
			if err := os.WriteFile(path, []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			var out, errb bytes.Buffer
			err := runVLLM(t.Context(), []string{"parse-log", path}, &out, &errb)
			want := fmt.Sprintf("no vLLM log lines found in %s (%d lines read): is this an engine log?", path, tt.lines)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("err = %v, want %q", err, want)
			}
			if out.Len() != 0 {
				t.Errorf("printed %q for a non-engine file; want nothing on stdout", out.String())
			}
		})
	}
}

func TestVLLMParseLogAcceptsEveryGoldenLog(t *testing.T) {
	logs, err := filepath.Glob(filepath.Join("..", "..", "internal", "vllmlog", "testdata", "*.log"))
	if err != nil || len(logs) == 0 {
		t.Fatalf("no golden logs: %v", err)
	}
	for _, l := range logs {
		t.Run(filepath.Base(l), func(t *testing.T) {
			var out, errb bytes.Buffer
			if err := runVLLM(t.Context(), []string{"parse-log", l}, &out, &errb); err != nil {
				t.Fatalf("parse-log refused a real engine log: %v", err)
			}
		})
	}
}
