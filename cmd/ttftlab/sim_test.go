package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// lockedBuffer collects the simulator's log from its goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

var uvicornRE = regexp.MustCompile(`Uvicorn running on (http://\S+)`)

// startSim runs `ttftlab sim ARGS` in process on a free port with a fast
// startup and returns its base URL once it is ready.
func startSim(t *testing.T, args ...string) string {
	t.Helper()
	var log lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	args = append([]string{"--port", "0", "--startup-scale", "0.001", "--sim-first-request-delay", "0",
		"--state-dir", t.TempDir(), "--disable-log-stats"}, args...)
	go func() { done <- runSim(ctx, args, &log, &log) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("runSim: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("runSim did not return after cancel")
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if m := uvicornRE.FindStringSubmatch(log.String()); m != nil {
			return m[1]
		}
		select {
		case err := <-done:
			done <- err
			t.Fatalf("runSim returned %v before ready:\n%s", err, log.String())
		case <-time.After(5 * time.Millisecond):
		}
	}
	t.Fatalf("sim not ready:\n%s", log.String())
	return ""
}

const simModel = "Qwen/Qwen2.5-1.5B-Instruct"

// TestSimWithOpenAIClient drives the simulator with the official OpenAI Go
// client: chat and completions, streaming and not.
func TestSimWithOpenAIClient(t *testing.T) {
	url := startSim(t, "--enable-prompt-tokens-details")
	client := openai.NewClient(option.WithBaseURL(url+"/v1/"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const maxTokens = 8

	t.Run("chat", func(t *testing.T) {
		resp, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model:     simModel,
			Messages:  []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("Be brief."), openai.UserMessage("Say hello.")},
			MaxTokens: openai.Int(maxTokens),
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Choices) != 1 || resp.Choices[0].Message.Content == "" || resp.Choices[0].FinishReason != "length" {
			t.Fatalf("choices %+v", resp.Choices)
		}
		if resp.Model != simModel || !strings.HasPrefix(resp.ID, "chatcmpl-") {
			t.Errorf("model %q id %q", resp.Model, resp.ID)
		}
		// Two messages of 10 template tokens each, 3 + 3 content tokens
		// ("brief." and "hello." are 6 characters: 2 tokens), 3 for the
		// assistant header.
		if u := resp.Usage; u.CompletionTokens != maxTokens || u.PromptTokens != 29 || u.TotalTokens != 29+maxTokens {
			t.Errorf("usage %+v, want 29 prompt and %d completion tokens", u, maxTokens)
		}
	})

	t.Run("chat streaming", func(t *testing.T) {
		stream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
			Model:         simModel,
			Messages:      []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Count to ten.")},
			MaxTokens:     openai.Int(maxTokens),
			StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
		})
		var acc openai.ChatCompletionAccumulator
		chunks := 0
		for stream.Next() {
			acc.AddChunk(stream.Current())
			chunks++
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		if len(acc.Choices) != 1 || acc.Choices[0].Message.Content == "" || acc.Choices[0].FinishReason != "length" {
			t.Fatalf("accumulated %+v", acc.Choices)
		}
		if got := len(strings.Fields(acc.Choices[0].Message.Content)); got != maxTokens {
			t.Errorf("content %q has %d words, want %d (one per token)", acc.Choices[0].Message.Content, got, maxTokens)
		}
		if acc.Usage.CompletionTokens != maxTokens || acc.Usage.PromptTokensDetails.CachedTokens != 0 {
			t.Errorf("usage %+v", acc.Usage)
		}
		// Role chunk, content (tokens of one step each, so a slow reader
		// may see several tokens per chunk, as with vLLM), usage chunk.
		if chunks < 3 {
			t.Errorf("%d chunks, want at least 3", chunks)
		}
	})

	t.Run("completions", func(t *testing.T) {
		resp, err := client.Completions.New(ctx, openai.CompletionNewParams{
			Model:     simModel,
			Prompt:    openai.CompletionNewParamsPromptUnion{OfString: openai.String("The quick brown fox")},
			MaxTokens: openai.Int(maxTokens),
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Choices) != 1 || resp.Choices[0].Text == "" || resp.Choices[0].FinishReason != "length" {
			t.Fatalf("choices %+v", resp.Choices)
		}
		// The(1) quick(2) brown(2) fox(1): words over 4 characters split.
		if u := resp.Usage; u.PromptTokens != 6 || u.CompletionTokens != maxTokens {
			t.Errorf("usage %d prompt and %d completion tokens, want 6 and %d", u.PromptTokens, u.CompletionTokens, maxTokens)
		}
	})

	t.Run("completions streaming with prefix hit", func(t *testing.T) {
		prompt := strings.Repeat("shared prefix words ", 20) // 120 tokens: 7 full blocks
		run := func() (text string, usage openai.CompletionUsage) {
			stream := client.Completions.NewStreaming(ctx, openai.CompletionNewParams{
				Model:         simModel,
				Prompt:        openai.CompletionNewParamsPromptUnion{OfString: openai.String(prompt)},
				MaxTokens:     openai.Int(maxTokens),
				StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
			})
			for stream.Next() {
				c := stream.Current()
				for _, ch := range c.Choices {
					text += ch.Text
				}
				if c.Usage.TotalTokens > 0 {
					usage = c.Usage
				}
			}
			if err := stream.Err(); err != nil {
				t.Fatal(err)
			}
			return text, usage
		}
		text, u1 := run()
		_, u2 := run()
		if len(strings.Fields(text)) != maxTokens {
			t.Errorf("text %q, want %d words", text, maxTokens)
		}
		if u1.PromptTokensDetails.CachedTokens != 0 || u2.PromptTokensDetails.CachedTokens != 112 {
			t.Errorf("cached tokens %d then %d, want 0 then 112", u1.PromptTokensDetails.CachedTokens, u2.PromptTokensDetails.CachedTokens)
		}
	})

	t.Run("unknown model is 404", func(t *testing.T) {
		_, err := client.Completions.New(ctx, openai.CompletionNewParams{
			Model:  "gpt-5",
			Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("hi")},
		})
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 404 || !strings.Contains(apiErr.Message, "The model `gpt-5` does not exist.") {
			t.Errorf("error %v, want vLLM's 404", err)
		}
	})
}

// TestSimFlags checks --model-config and --calibration end to end.
func TestSimFlags(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.json")
	if err := os.WriteFile(cfgPath, []byte(`{"_name_or_path": "acme/tiny-llama", "architectures": ["LlamaForCausalLM"],
	  "num_hidden_layers": 4, "hidden_size": 512, "num_attention_heads": 8, "num_key_value_heads": 2,
	  "intermediate_size": 1024, "vocab_size": 32000, "max_position_embeddings": 2048, "torch_dtype": "bfloat16"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	calPath := filepath.Join(dir, "cal.json")
	if err := os.WriteFile(calPath, []byte(`{"perf": {"t_api": "1ms", "t_step_cpu": "0.5ms"}, "gpu": {"total_gib": 24}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	url := startSim(t, "--model-config", cfgPath, "--calibration", calPath)
	client := openai.NewClient(option.WithBaseURL(url+"/v1/"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
	page, err := client.Models.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Data) != 1 || page.Data[0].ID != "acme/tiny-llama" {
		t.Errorf("models %+v, want acme/tiny-llama", page.Data)
	}

	var stderr bytes.Buffer
	err = runSim(context.Background(), []string{"--calibration", writeFile(t, `{"perf": {"tau": "1ms"}}`)}, &bytes.Buffer{}, &stderr)
	if err == nil || !strings.Contains(err.Error(), `unknown field "tau"`) {
		t.Errorf("bad calibration: %v, want an unknown-field error", err)
	}
	err = runSim(context.Background(), []string{"--model-config", writeFile(t, `{"hidden_size": 8}`)}, &bytes.Buffer{}, &stderr)
	if err == nil || !strings.Contains(err.Error(), "missing or invalid num_hidden_layers") {
		t.Errorf("bad model config: %v, want a missing-field error", err)
	}
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f.json")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSimDiskReadFlag checks --disk-read-gbps: a bad value is refused with
// the flag and the fix named, and a slow disk lengthens the weights read
// the sim logs (a sleep is a lower bound, so the slow case cannot flake).
func TestSimDiskReadFlag(t *testing.T) {
	for _, v := range []string{"0", "-1", "NaN", "5000"} {
		t.Run("refuses "+v, func(t *testing.T) {
			err := runSim(t.Context(), []string{"--port", "0", "--state-dir", t.TempDir(), "--disk-read-gbps", v}, &bytes.Buffer{}, &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), "--disk-read-gbps") || !strings.Contains(err.Error(), "GB/s in (0, 1000]") {
				t.Errorf("runSim = %v, want an error naming --disk-read-gbps and its range", err)
			}
		})
	}
	t.Run("slow disk reads slowly", func(t *testing.T) {
		var log lockedBuffer
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		// 3.09 GB of weights at 0.1 GB/s is 30.9 s, scaled by 0.01: at
		// least 0.31 s; the default 1.5 GB/s would take 0.02 s.
		go func() {
			done <- runSim(ctx, []string{"--port", "0", "--startup-scale", "0.01", "--state-dir", t.TempDir(),
				"--disable-log-stats", "--enforce-eager", "--disk-read-gbps", "0.1"}, &log, &log)
		}()
		defer func() { cancel(); <-done }()
		re := regexp.MustCompile(`Loading weights took ([0-9.]+) seconds`)
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			if m := re.FindStringSubmatch(log.String()); m != nil {
				if got, err := strconv.ParseFloat(m[1], 64); err != nil || got < 0.30 {
					t.Fatalf("weights read in %s s with --disk-read-gbps 0.1, want at least 0.30 s", m[1])
				}
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("no weights line:\n%s", log.String())
	})
}

// TestSimAsyncSchedulingFlag checks that --async-scheduling reaches the
// engine: vLLM lists it among the non-default args at startup.
func TestSimAsyncSchedulingFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want bool
	}{{nil, false}, {[]string{"--async-scheduling"}, true}} {
		t.Run(strings.Join(append([]string{"args"}, tc.args...), " "), func(t *testing.T) {
			var log lockedBuffer
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() {
				done <- runSim(ctx, append([]string{"--port", "0", "--startup-scale", "0.01", "--state-dir", t.TempDir(), "--disable-log-stats"}, tc.args...), &log, &log)
			}()
			defer func() { cancel(); <-done }()
			deadline := time.Now().Add(20 * time.Second)
			for time.Now().Before(deadline) {
				if line, ok := findLine(log.String(), "non-default args:"); ok {
					if got := strings.Contains(line, "'async_scheduling': True"); got != tc.want {
						t.Fatalf("non-default args line %q: async_scheduling listed = %v, want %v", line, got, tc.want)
					}
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
			t.Fatalf("no non-default args line:\n%s", log.String())
		})
	}
}

func findLine(s, sub string) (string, bool) {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return l, true
		}
	}
	return "", false
}
