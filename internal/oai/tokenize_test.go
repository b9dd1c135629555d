package oai

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestParseTokenizeResponse(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		want    int
		wantErr string
	}{
		{name: "vllm", body: `{"count":3,"max_model_len":32768,"tokens":[1,2,3],"token_strs":null}`, want: 3},
		{name: "count only", body: `{"count":7}`, want: 7},
		{name: "empty prompt", body: `{"count":0,"tokens":[]}`, want: 0},
		{name: "not json", body: `<html>404</html>`, wantErr: "not a tokenize object"},
		{name: "no count", body: `{"tokens":[1]}`, wantErr: `no "count"`},
		{name: "negative", body: `{"count":-1}`, wantErr: "not a token count"},
		{name: "fraction", body: `{"count":1.5}`, wantErr: "not a token count"},
		{name: "huge", body: `{"count":1e300}`, wantErr: "not a token count"},
		{name: "count disagrees", body: `{"count":2,"tokens":[1]}`, wantErr: "disagrees"},
		{name: "bad id", body: `{"count":1,"tokens":["x"]}`, wantErr: "not a token id"},
		{name: "trailing", body: `{"count":1} {"count":2}`, wantErr: "after its JSON object"},
		{name: "array", body: `[1,2]`, wantErr: "not a tokenize object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseTokenizeResponse([]byte(tt.body))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseTokenizeResponse(%s) = %d, %v; want error containing %q", tt.body, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseTokenizeResponse(%s) = %d, %v; want %d", tt.body, got, err, tt.want)
			}
		})
	}
}

func FuzzParseTokenizeResponse(f *testing.F) {
	for _, s := range []string{`{"count":3,"tokens":[1,2,3]}`, `{"count":0}`, `{"count":-5}`, `{}`, `[`, `{"count":2,"tokens":[1,"a"]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := ParseTokenizeResponse(b)
		if err == nil && (n < 0 || n > maxTokenizeCount) {
			t.Fatalf("accepted count %d out of range", n)
		}
	})
}

func TestTokenize(t *testing.T) {
	var got map[string]any
	mux := http.NewServeMux()
	mux.HandleFunc("POST /tokenize", func(w http.ResponseWriter, r *http.Request) {
		got = nil
		if err := json.NewDecoder(r.Body).Decode(&got); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"count":4,"max_model_len":10,"tokens":[5,6,7,8],"token_strs":null}`))
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	bare := httptest.NewServer(http.NotFoundHandler())
	defer bare.Close()
	c, err := NewClient(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()

	t.Run("chat sends messages", func(t *testing.T) {
		n, err := c.Tokenize(ctx, srv.URL, "", "m", APIChat, "hi there")
		if err != nil || n != 4 {
			t.Fatalf("Tokenize = %d, %v; want 4", n, err)
		}
		if _, ok := got["messages"]; !ok || got["model"] != "m" {
			t.Fatalf("chat tokenize sent %v, want model and messages", got)
		}
	})
	t.Run("completions sends prompt", func(t *testing.T) {
		if _, err := c.Tokenize(ctx, srv.URL, "", "m", APICompletions, "hi"); err != nil {
			t.Fatal(err)
		}
		if got["prompt"] != "hi" {
			t.Fatalf("completions tokenize sent %v, want prompt", got)
		}
	})
	t.Run("404 is ErrNoTokenize", func(t *testing.T) {
		_, err := c.Tokenize(ctx, bare.URL, "", "m", APIChat, "hi")
		if !errors.Is(err, ErrNoTokenize) {
			t.Fatalf("Tokenize on a server without /tokenize: %v, want ErrNoTokenize", err)
		}
	})
}
