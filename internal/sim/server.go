package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// route is one entry of vLLM's "Available routes are:" listing.
type route struct{ path, methods string }

var routes = []route{
	{"/openapi.json", "GET, HEAD"},
	{"/docs", "GET, HEAD"},
	{"/health", "GET"},
	{"/load", "GET"},
	{"/ping", "POST"},
	{"/ping", "GET"},
	{"/tokenize", "POST"},
	{"/detokenize", "POST"},
	{"/version", "GET"},
	{"/v1/models", "GET"},
	{"/v1/chat/completions", "POST"},
	{"/v1/completions", "POST"},
	{"/metrics", "GET"},
	{"/reset_prefix_cache", "POST"},
	{"/sleep", "POST"},
	{"/wake_up", "POST"},
	{"/is_sleeping", "GET"},
}

// Handler returns the engine's HTTP API. It is usable once Ready is closed.
func (e *Engine) Handler() http.Handler {
	mux := http.NewServeMux()
	ok := func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }
	mux.HandleFunc("GET /health", ok)
	mux.HandleFunc("GET /ping", ok)
	mux.HandleFunc("POST /ping", ok)
	mux.HandleFunc("GET /version", e.handleVersion)
	mux.HandleFunc("GET /load", e.handleLoad)
	mux.HandleFunc("GET /v1/models", e.handleModels)
	mux.HandleFunc("GET /metrics", e.handleMetrics)
	mux.HandleFunc("GET /metrics/", e.handleMetrics)
	mux.HandleFunc("POST /v1/completions", e.handleCompletions)
	mux.HandleFunc("POST /v1/chat/completions", e.handleChat)
	mux.HandleFunc("POST /tokenize", e.handleTokenize)
	mux.HandleFunc("POST /detokenize", e.handleDetokenize)
	// vLLM serves these only with VLLM_SERVER_DEV_MODE=1; the simulator
	// always does.
	mux.HandleFunc("POST /reset_prefix_cache", e.handleResetPrefixCache)
	mux.HandleFunc("POST /sleep", e.handleSleep)
	mux.HandleFunc("POST /wake_up", e.handleWakeUp)
	mux.HandleFunc("GET /is_sleeping", e.handleIsSleeping)
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]string{"detail": "Not Found"})
	})
	if e.cfg.DisableAccessLog {
		return mux
	}
	return e.accessLog(mux)
}

// accessLog prints uvicorn's access line when the response starts, as
// uvicorn does: `INFO:     127.0.0.1:42676 - "GET /v1/models HTTP/1.1" 200 OK`.
func (e *Engine) accessLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		aw := &accessWriter{ResponseWriter: w, log: func(code int) {
			e.log.raw(procAPI, fmt.Sprintf(`INFO:     %s - "%s %s HTTP/%d.%d" %d %s`,
				r.RemoteAddr, r.Method, r.URL.RequestURI(), r.ProtoMajor, r.ProtoMinor, code, http.StatusText(code)))
		}}
		next.ServeHTTP(aw, r)
		aw.WriteHeader(http.StatusOK) // logs once if the handler never wrote
	})
}

// accessWriter logs the status the first time the header is written.
type accessWriter struct {
	http.ResponseWriter
	log    func(code int)
	logged bool
}

func (a *accessWriter) WriteHeader(code int) {
	if !a.logged {
		a.logged = true
		a.log(code)
		a.ResponseWriter.WriteHeader(code)
	}
}

func (a *accessWriter) Write(b []byte) (int, error) {
	a.WriteHeader(http.StatusOK)
	return a.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach Flush.
func (a *accessWriter) Unwrap() http.ResponseWriter { return a.ResponseWriter }

// marshal encodes v compactly without HTML escaping, like pydantic.
func marshal(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic(fmt.Sprintf("sim: marshal %T: %v", v, err)) // only fixed types are encoded
	}
	return bytes.TrimRight(b.Bytes(), "\n")
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(marshal(v)) //nolint:errcheck // the client may be gone
}

// errorBody is vLLM 0.10.1+'s ErrorResponse.
type errorBody struct {
	Error errorInfo `json:"error"`
}

type errorInfo struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    int     `json:"code"`
}

// apiError is an error answered with vLLM's error body.
type apiError struct {
	status int
	typ    string
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func badRequest(format string, args ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, typ: "BadRequestError", msg: fmt.Sprintf(format, args...)}
}

// validationError is a pydantic request-validation failure (type "Bad Request").
func validationError(format string, args ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, typ: "Bad Request", msg: fmt.Sprintf(format, args...)}
}

func writeError(w http.ResponseWriter, err *apiError) {
	writeJSON(w, err.status, errorBody{Error: errorInfo{Message: err.msg, Type: err.typ, Code: err.status}})
}

func (e *Engine) handleVersion(w http.ResponseWriter, _ *http.Request) {
	v := struct {
		Version      string   `json:"version"`
		StartupScale *float64 `json:"sim_startup_scale,omitempty"`
		Slowdown     *float64 `json:"sim_slowdown,omitempty"`
	}{Version: Version}
	if e.cfg.Slowdown != 1 {
		s := e.cfg.Slowdown
		v.Slowdown = &s
	}
	if e.cfg.StartupScale != 1 {
		s := e.cfg.StartupScale
		v.StartupScale = &s
	}
	writeJSON(w, http.StatusOK, v)
}

func (e *Engine) handleLoad(w http.ResponseWriter, _ *http.Request) {
	e.met.mu.Lock()
	n := e.met.running + e.met.waiting
	e.met.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]int{"server_load": n})
}

func (e *Engine) handleMetrics(w http.ResponseWriter, _ *http.Request) {
	var b bytes.Buffer
	e.met.write(&b) //nolint:errcheck // a bytes.Buffer does not fail
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	w.Write(b.Bytes()) //nolint:errcheck // the client may be gone
}

// handleResetPrefixCache drops every cached block hash and answers 200 with
// an empty body, as vLLM does, whether or not the reset succeeded (it fails
// while requests hold blocks; the engine then logs a warning).
func (e *Engine) handleResetPrefixCache(w http.ResponseWriter, r *http.Request) {
	e.log.info(procAPI, "api_server.py", 1003, "Resetting prefix cache with specific %s...", "None")
	res, err := e.sched.resetPrefixCache(r.Context())
	switch {
	case err != nil:
	case res.ok:
		e.log.info(procEngine, "block_pool.py", 355, "Successfully reset prefix cache")
	default:
		e.log.line(procEngine, "WARNING", "block_pool.py", 343, "Failed to reset prefix cache because some blocks (%d) are not freed yet", res.used)
	}
	w.WriteHeader(http.StatusOK)
}

// handleSleep pauses the engine (vLLM's sleep mode): the prefix cache is
// dropped, waiting requests queue until /wake_up, and the level-1 weight
// offload takes weights/host-to-device bandwidth (scaled by --startup-scale).
func (e *Engine) handleSleep(w http.ResponseWriter, r *http.Request) {
	level := r.URL.Query().Get("level")
	if level == "" {
		level = "1"
	}
	if level != "1" && level != "2" {
		writeError(w, validationError("level: Input should be 1 or 2, got %q", level))
		return
	}
	start := time.Now()
	if _, err := e.sched.resetPrefixCache(r.Context()); err != nil {
		return
	}
	e.sched.setSleeping(true)
	d := 100 * time.Millisecond
	if level == "1" {
		d += time.Duration(float64(e.cfg.model.WeightBytes()) / e.cfg.Startup.HostToDeviceBps * float64(time.Second))
	}
	if sleepCtx(r.Context(), time.Duration(float64(d)*e.cfg.StartupScale)) != nil {
		return
	}
	e.log.info(procEngine, "gpu_worker.py", 117, "Sleep mode freed %.2f GiB memory, %.2f GiB memory is still in use.",
		e.plan.AvailableGiB()+float64(e.cfg.model.WeightBytes())/GiB, e.cfg.Memory.NonTorchGiB)
	e.log.info(procEngine, "abstract.py", 245, "It took %.6f seconds to fall asleep.", time.Since(start).Seconds())
	w.WriteHeader(http.StatusOK)
}

// handleWakeUp reloads the weights and resumes the engine.
func (e *Engine) handleWakeUp(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if e.sched.sleeping.Load() {
		d := time.Duration(float64(e.cfg.model.WeightBytes()) / e.cfg.Startup.HostToDeviceBps * float64(time.Second))
		if sleepCtx(r.Context(), time.Duration(float64(d)*e.cfg.StartupScale)) != nil {
			return
		}
	}
	e.sched.setSleeping(false)
	e.log.info(procEngine, "abstract.py", 265, "It took %.6f seconds to wake up tags %s.", time.Since(start).Seconds(), "{'weights', 'kv_cache'}")
	w.WriteHeader(http.StatusOK)
}

func (e *Engine) handleIsSleeping(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]bool{"is_sleeping": e.sched.sleeping.Load()})
}

// modelCard is vLLM's ModelCard.
type modelCard struct {
	ID          string            `json:"id"`
	Object      string            `json:"object"`
	Created     int64             `json:"created"`
	OwnedBy     string            `json:"owned_by"`
	Root        string            `json:"root"`
	Parent      *string           `json:"parent"`
	MaxModelLen int               `json:"max_model_len"`
	Permission  []modelPermission `json:"permission"`
}

type modelPermission struct {
	ID                 string  `json:"id"`
	Object             string  `json:"object"`
	Created            int64   `json:"created"`
	AllowCreateEngine  bool    `json:"allow_create_engine"`
	AllowSampling      bool    `json:"allow_sampling"`
	AllowLogprobs      bool    `json:"allow_logprobs"`
	AllowSearchIndices bool    `json:"allow_search_indices"`
	AllowView          bool    `json:"allow_view"`
	AllowFineTuning    bool    `json:"allow_fine_tuning"`
	Organization       string  `json:"organization"`
	Group              *string `json:"group"`
	IsBlocking         bool    `json:"is_blocking"`
}

func (e *Engine) handleModels(w http.ResponseWriter, _ *http.Request) {
	now := time.Now().Unix()
	card := modelCard{
		ID: e.cfg.ServedModelName, Object: "model", Created: now, OwnedBy: "vllm",
		Root: e.cfg.Model, MaxModelLen: e.cfg.MaxModelLen,
		Permission: []modelPermission{{
			ID: "modelperm-" + e.newID(), Object: "model_permission", Created: now,
			AllowSampling: true, AllowLogprobs: true, AllowView: true, Organization: "*",
		}},
	}
	writeJSON(w, http.StatusOK, struct {
		Object string      `json:"object"`
		Data   []modelCard `json:"data"`
	}{"list", []modelCard{card}})
}

// newID returns 32 hex digits, unique within this engine.
func (e *Engine) newID() string {
	return fmt.Sprintf("%016x%016x", e.idBase, e.idSeq.Add(1))
}

// requestID returns vLLM's request id: the X-Request-Id header when given.
func (e *Engine) requestID(prefix string, r *http.Request) string {
	if id := r.Header.Get("X-Request-Id"); id != "" {
		return prefix + id
	}
	return prefix + e.newID()
}

// streamOptions is the OpenAI stream_options object.
type streamOptions struct {
	IncludeUsage         *bool `json:"include_usage"`
	ContinuousUsageStats *bool `json:"continuous_usage_stats"`
}

// genParams are the fields common to both endpoints.
type genParams struct {
	Model         string          `json:"model"`
	MaxTokens     json.RawMessage `json:"max_tokens"`
	Stream        bool            `json:"stream"`
	StreamOptions json.RawMessage `json:"stream_options"`
	N             *int            `json:"n"`
}

type completionRequest struct {
	genParams
	Prompt json.RawMessage `json:"prompt"`
}

type chatRequest struct {
	genParams
	MaxCompletionTokens json.RawMessage `json:"max_completion_tokens"`
	Messages            []struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	} `json:"messages"`
}

// decodeBody parses a JSON request body into v. The server's ReadTimeout
// bounds the read; once the body is in, the read deadline is lifted, so
// that it cannot touch the connection while a long response streams.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) *apiError {
	err := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 64<<20)).Decode(v)
	if err != nil {
		return validationError("[{'type': 'json_invalid', 'loc': ('body',), 'msg': 'JSON decode error', 'input': {}, 'ctx': {'error': %q}}]", err.Error())
	}
	// Not every ResponseWriter supports deadlines (httptest's recorder);
	// then there is none to lift.
	_ = http.NewResponseController(w).SetReadDeadline(time.Time{})
	return nil
}

// optInt decodes an optional integer field; absent and null give nil.
func optInt(raw json.RawMessage, name string) (*int, *apiError) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var n int
	if err := json.Unmarshal(raw, &n); err != nil {
		return nil, validationError("%s: Input should be a valid integer, got %s", name, raw)
	}
	return &n, nil
}

// streamOpts validates stream_options against stream (a pydantic validator
// in vLLM, so the error type is "Bad Request").
func (p genParams) streamOpts() (includeUsage, continuous bool, err *apiError) {
	raw := strings.TrimSpace(string(p.StreamOptions))
	if raw == "" || raw == "null" {
		return false, false, nil
	}
	var so streamOptions
	if e := json.Unmarshal(p.StreamOptions, &so); e != nil {
		return false, false, validationError("stream_options: Input should be a valid dictionary or object: %v", e)
	}
	if !p.Stream {
		if raw == "{}" {
			return false, false, nil // an empty dict is falsy in Python
		}
		return false, false, validationError("Stream options can only be defined when `stream=True`.")
	}
	includeUsage = so.IncludeUsage == nil || *so.IncludeUsage
	continuous = so.ContinuousUsageStats != nil && *so.ContinuousUsageStats
	return includeUsage, continuous, nil
}

// checkModel answers vLLM's 404 for a model it does not serve.
func (e *Engine) checkModel(name string) *apiError {
	if name == "" || name == e.cfg.ServedModelName {
		return nil
	}
	return &apiError{status: http.StatusNotFound, typ: "NotFoundError", msg: fmt.Sprintf("The model `%s` does not exist.", name)}
}

// checkLength applies vLLM 0.11's context-length validation. maxTokens is
// nil when the request left it unset.
func (e *Engine) checkLength(promptLen int, maxTokens *int) *apiError {
	n := e.cfg.MaxModelLen
	if promptLen == 0 {
		return badRequest("The decoder prompt cannot be empty")
	}
	if promptLen >= n {
		return badRequest("This model's maximum context length is %d tokens. However, your request has %d input tokens. Please reduce the length of the input messages.", n, promptLen)
	}
	// Compared without adding, so that a huge max_tokens cannot overflow
	// into a small one.
	if maxTokens != nil && *maxTokens > n-promptLen {
		return badRequest("'max_tokens' or 'max_completion_tokens' is too large: %d. This model's maximum context length is %d tokens and your request has %d input tokens (%d > %d - %d).",
			*maxTokens, n, promptLen, *maxTokens, n, promptLen)
	}
	if maxTokens != nil && *maxTokens < 1 {
		return badRequest("max_tokens must be at least 1, got %d.", *maxTokens)
	}
	return nil
}

// parsePrompt encodes a completions prompt: a string, a list of one string,
// a list of token ids, or a list of one list of token ids.
func (e *Engine) parsePrompt(raw json.RawMessage) ([]uint32, *apiError) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return e.tok.encode(nil, s), nil
	}
	var ss []string
	if json.Unmarshal(raw, &ss) == nil && len(ss) == 1 {
		return e.tok.encode(nil, ss[0]), nil
	}
	var ids []int64
	if json.Unmarshal(raw, &ids) != nil {
		var nested [][]int64
		if json.Unmarshal(raw, &nested) != nil || len(nested) != 1 {
			return nil, validationError("prompt: expected a string, a list of one string, or token ids (ttftlab sim serves one prompt per request)")
		}
		ids = nested[0]
	}
	out := make([]uint32, len(ids))
	for i, id := range ids {
		if id < 0 || id >= int64(e.cfg.model.Vocab) {
			return nil, badRequest("Token id %d is out of vocabulary", id)
		}
		out[i] = uint32(id)
	}
	return out, nil
}

// messageText flattens a chat message's content: a string, null, or a list
// of parts whose text parts are joined with newlines.
func messageText(raw json.RawMessage) (string, *apiError) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", validationError("messages: content should be a string or a list of parts")
	}
	texts := make([]string, 0, len(parts))
	for _, p := range parts {
		if p.Type == "text" {
			texts = append(texts, p.Text)
		}
	}
	return strings.Join(texts, "\n"), nil
}

func (e *Engine) handleCompletions(w http.ResponseWriter, r *http.Request) {
	arrival := time.Now()
	var req completionRequest
	if err := decodeBody(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	g, err := e.prepare(req.genParams, req.MaxTokens, func() ([]uint32, *apiError) { return e.parsePrompt(req.Prompt) }, 16)
	if err != nil {
		writeError(w, err)
		return
	}
	g.chat, g.arrival, g.id = false, arrival, e.requestID("cmpl-", r)
	e.generate(w, r, g)
}

func (e *Engine) handleChat(w http.ResponseWriter, r *http.Request) {
	arrival := time.Now()
	var req chatRequest
	if err := decodeBody(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	maxRaw := req.MaxCompletionTokens
	if len(maxRaw) == 0 || string(maxRaw) == "null" {
		maxRaw = req.MaxTokens
	}
	g, err := e.prepare(req.genParams, maxRaw, func() ([]uint32, *apiError) {
		if len(req.Messages) == 0 {
			return nil, validationError("messages: Field required")
		}
		msgs := make([]chatMessage, len(req.Messages))
		for i, m := range req.Messages {
			text, err := messageText(m.Content)
			if err != nil {
				return nil, err
			}
			msgs[i] = chatMessage{Role: m.Role, Content: text}
		}
		return e.tok.encodeChat(nil, msgs), nil
	}, 0)
	if err != nil {
		writeError(w, err)
		return
	}
	g.chat, g.arrival, g.id = true, arrival, e.requestID("chatcmpl-", r)
	e.generate(w, r, g)
}

// generation is a validated request ready for the scheduler.
type generation struct {
	id                 string
	chat               bool
	arrival            time.Time
	prompt             []uint32
	maxTokens          int
	stream             bool
	includeUsage       bool
	continuousUsage    bool
	includeTokenDetail bool
}

// prepare validates in vLLM's order: request schema, model, then length.
// defaultMax is the max_tokens default (0 means max_model_len − prompt).
func (e *Engine) prepare(p genParams, maxRaw json.RawMessage, encode func() ([]uint32, *apiError), defaultMax int) (generation, *apiError) {
	incl, cont, err := p.streamOpts()
	if err != nil {
		return generation{}, err
	}
	if p.N != nil && *p.N != 1 {
		return generation{}, badRequest("n=%d: ttftlab sim generates one choice per request", *p.N)
	}
	maxTokens, err := optInt(maxRaw, "max_tokens")
	if err != nil {
		return generation{}, err
	}
	if len(maxRaw) == 0 && defaultMax > 0 {
		maxTokens = &defaultMax
	}
	if err := e.checkModel(p.Model); err != nil {
		return generation{}, err
	}
	prompt, err := encode()
	if err != nil {
		return generation{}, err
	}
	if err := e.checkLength(len(prompt), maxTokens); err != nil {
		return generation{}, err
	}
	g := generation{
		prompt: prompt, stream: p.Stream, includeUsage: incl, continuousUsage: cont,
		includeTokenDetail: e.cfg.EnablePromptTokensDetails,
	}
	if maxTokens != nil {
		g.maxTokens = *maxTokens
	} else {
		g.maxTokens = e.cfg.MaxModelLen - len(prompt)
	}
	return g, nil
}

// usageInfo is vLLM's UsageInfo, in its field order.
type usageInfo struct {
	PromptTokens        int                  `json:"prompt_tokens"`
	TotalTokens         int                  `json:"total_tokens"`
	CompletionTokens    int                  `json:"completion_tokens"`
	PromptTokensDetails *promptTokensDetails `json:"prompt_tokens_details"`
}

// usageUnset is UsageInfo dumped with exclude_unset (chat streaming).
type usageUnset struct {
	PromptTokens        int                  `json:"prompt_tokens"`
	TotalTokens         int                  `json:"total_tokens"`
	CompletionTokens    int                  `json:"completion_tokens"`
	PromptTokensDetails *promptTokensDetails `json:"prompt_tokens_details,omitempty"`
}

type promptTokensDetails struct {
	CachedTokens int `json:"cached_tokens"`
}

// usage returns the request's UsageInfo. As in vLLM 0.11 (`if
// self.enable_prompt_tokens_details and num_cached_tokens`),
// prompt_tokens_details is set only with --enable-prompt-tokens-details and
// only when some prompt tokens were cached: a miss gives null, not 0.
func (g generation) usage(out, cached int) usageInfo {
	u := usageInfo{PromptTokens: len(g.prompt), TotalTokens: len(g.prompt) + out, CompletionTokens: out}
	if g.includeTokenDetail && cached > 0 {
		u.PromptTokensDetails = &promptTokensDetails{CachedTokens: cached}
	}
	return u
}

var jsonNull = json.RawMessage("null")

// chatChunk is ChatCompletionStreamResponse dumped with exclude_unset.
type chatChunk struct {
	ID             string            `json:"id"`
	Object         string            `json:"object"`
	Created        int64             `json:"created"`
	Model          string            `json:"model"`
	Choices        []chatChunkChoice `json:"choices"`
	Usage          *usageUnset       `json:"usage,omitempty"`
	PromptTokenIDs json.RawMessage   `json:"prompt_token_ids,omitempty"`
}

type chatChunkChoice struct {
	Index        int             `json:"index"`
	Delta        chatDelta       `json:"delta"`
	Logprobs     json.RawMessage `json:"logprobs"`
	FinishReason *string         `json:"finish_reason"`
	StopReason   json.RawMessage `json:"stop_reason,omitempty"`
	TokenIDs     json.RawMessage `json:"token_ids,omitempty"`
}

type chatDelta struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

// completionChunk is CompletionStreamResponse.
type completionChunk struct {
	ID      string                  `json:"id"`
	Object  string                  `json:"object"`
	Created int64                   `json:"created"`
	Model   string                  `json:"model"`
	Choices []completionChunkChoice `json:"choices"`
	Usage   *usageInfo              `json:"usage"`
}

type completionChunkChoice struct {
	Index          int             `json:"index"`
	Text           string          `json:"text"`
	Logprobs       json.RawMessage `json:"logprobs"`
	FinishReason   *string         `json:"finish_reason"`
	StopReason     json.RawMessage `json:"stop_reason"`
	PromptTokenIDs json.RawMessage `json:"prompt_token_ids"`
	TokenIDs       json.RawMessage `json:"token_ids"`
}

// generate submits g and writes the response, streaming or not. A client
// that goes away aborts the request, which frees its KV blocks at once.
func (e *Engine) generate(w http.ResponseWriter, r *http.Request, g generation) {
	ctx := r.Context()
	// HTTP handling, tokenisation and input processing before the engine:
	// t_api from the request's arrival, so the simulator's own parsing and
	// tokenising (slow for long prompts on a busy host) is absorbed in it
	// rather than added to it.
	if err := sleepCtx(ctx, e.cfg.Perf.TAPI-time.Since(g.arrival)); err != nil {
		return
	}
	req := newRequest(g.id, g.prompt, g.maxTokens, g.arrival)
	if err := e.sched.submit(req); err != nil {
		writeError(w, &apiError{status: http.StatusInternalServerError, typ: "InternalServerError", msg: err.Error()})
		return
	}
	created := time.Now().Unix()
	if g.stream {
		e.stream(ctx, w, g, req, created)
		return
	}
	p, err := waitDone(ctx, req)
	if err != nil {
		e.sched.abort(req)
		return
	}
	if p.err != nil {
		writeError(w, &apiError{status: http.StatusInternalServerError, typ: "InternalServerError", msg: p.err.Error()})
		return
	}
	text := e.tok.outputText(0, p.out)
	reason := p.reason
	u := g.usage(p.out, p.cached)
	if g.chat {
		writeJSON(w, http.StatusOK, chatResponse{
			ID: g.id, Object: "chat.completion", Created: created, Model: e.cfg.ServedModelName,
			Choices: []chatResponseChoice{{
				Message:      chatMessageOut{Role: "assistant", Content: text, ToolCalls: []string{}},
				FinishReason: reason,
			}},
			Usage: u,
		})
		return
	}
	writeJSON(w, http.StatusOK, completionResponse{
		ID: g.id, Object: "text_completion", Created: created, Model: e.cfg.ServedModelName,
		Choices: []completionChoice{{Text: text, FinishReason: reason}}, Usage: u,
	})
}

// completionResponse is the non-streaming CompletionResponse.
type completionResponse struct {
	ID                string             `json:"id"`
	Object            string             `json:"object"`
	Created           int64              `json:"created"`
	Model             string             `json:"model"`
	Choices           []completionChoice `json:"choices"`
	ServiceTier       *string            `json:"service_tier"`
	SystemFingerprint *string            `json:"system_fingerprint"`
	Usage             usageInfo          `json:"usage"`
	KVTransferParams  *string            `json:"kv_transfer_params"`
}

type completionChoice struct {
	Index          int     `json:"index"`
	Text           string  `json:"text"`
	Logprobs       *string `json:"logprobs"`
	FinishReason   string  `json:"finish_reason"`
	StopReason     *string `json:"stop_reason"`
	PromptLogprobs *string `json:"prompt_logprobs"`
	PromptTokenIDs *string `json:"prompt_token_ids"`
	TokenIDs       *string `json:"token_ids"`
}

// chatResponseChoice is the non-streaming chat choice.
type chatResponseChoice struct {
	Index        int            `json:"index"`
	Message      chatMessageOut `json:"message"`
	Logprobs     *string        `json:"logprobs"`
	FinishReason string         `json:"finish_reason"`
	StopReason   *string        `json:"stop_reason"`
	TokenIDs     *string        `json:"token_ids"`
}

type chatMessageOut struct {
	Role             string   `json:"role"`
	Content          string   `json:"content"`
	Refusal          *string  `json:"refusal"`
	Annotations      *string  `json:"annotations"`
	Audio            *string  `json:"audio"`
	FunctionCall     *string  `json:"function_call"`
	ToolCalls        []string `json:"tool_calls"`
	ReasoningContent *string  `json:"reasoning_content"`
}

// chatResponse is the non-streaming ChatCompletionResponse.
type chatResponse struct {
	ID                string               `json:"id"`
	Object            string               `json:"object"`
	Created           int64                `json:"created"`
	Model             string               `json:"model"`
	Choices           []chatResponseChoice `json:"choices"`
	ServiceTier       *string              `json:"service_tier"`
	SystemFingerprint *string              `json:"system_fingerprint"`
	Usage             usageInfo            `json:"usage"`
	PromptLogprobs    *string              `json:"prompt_logprobs"`
	PromptTokenIDs    *string              `json:"prompt_token_ids"`
	KVTransferParams  *string              `json:"kv_transfer_params"`
}

// waitDone blocks until req finishes or ctx is done.
func waitDone(ctx context.Context, req *request) (progress, error) {
	for {
		if p := req.progress(); p.done {
			return p, nil
		}
		select {
		case <-ctx.Done():
			return progress{}, ctx.Err()
		case <-req.notify:
		}
	}
}

// sseWriter writes `data: ...\n\n` events and flushes each one.
type sseWriter struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

// sendRaw writes events already framed by appendSSE in one write and
// flushes them: the events of one engine step reach the client in one
// syscall per stream. An empty ev writes nothing.
func (s sseWriter) sendRaw(ev []byte) error {
	if len(ev) == 0 {
		return nil
	}
	if _, err := s.w.Write(ev); err != nil {
		return err
	}
	return s.rc.Flush()
}

var (
	sseData = []byte("data: ")
	sseEnd  = []byte("\n\n")
	sseDone = []byte("[DONE]")
)

// stream writes the SSE response of req as vLLM 0.11 does.
func (e *Engine) stream(ctx context.Context, w http.ResponseWriter, g generation, req *request, created int64) {
	w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	sw := sseWriter{w: w, rc: http.NewResponseController(w)}
	if err := sw.rc.Flush(); err != nil {
		e.sched.abort(req)
		return
	}
	model := e.cfg.ServedModelName
	sent := 0
	fail := func() { e.sched.abort(req) }
	// The plain token chunk (no finish_reason, no usage) is the one sent on
	// every step: it is cut once into a template around its text.
	var tmpl chunkTemplate
	if !g.continuousUsage {
		text := chunkSentinel
		if g.chat {
			tmpl = newChunkTemplate(marshal(chatChunk{
				ID: g.id, Object: "chat.completion.chunk", Created: created, Model: model,
				Choices: []chatChunkChoice{{Delta: chatDelta{Content: &text}, Logprobs: jsonNull, TokenIDs: jsonNull}},
			}))
		} else {
			tmpl = newChunkTemplate(marshal(completionChunk{
				ID: g.id, Object: "text_completion", Created: created, Model: model,
				Choices: []completionChunkChoice{{
					Text: text, Logprobs: jsonNull, StopReason: jsonNull, PromptTokenIDs: jsonNull, TokenIDs: jsonNull,
				}},
			}))
		}
	}
	// ev holds the events of one wake; they leave in one write and one
	// flush, and the buffer is reused from wake to wake.
	var ev []byte
	for {
		ev = ev[:0]
		p := req.progress()
		if p.out > sent {
			text := e.tok.outputText(sent, p.out)
			var reason *string
			if p.done && p.err == nil {
				reason = &p.reason
			}
			switch {
			case g.chat:
				var usage *usageUnset
				if g.continuousUsage {
					u := usageUnset(g.usage(0, p.cached))
					usage = &u
				}
				if sent == 0 {
					empty := ""
					ev = appendSSE(ev, marshal(chatChunk{
						ID: g.id, Object: "chat.completion.chunk", Created: created, Model: model,
						Choices:        []chatChunkChoice{{Delta: chatDelta{Role: "assistant", Content: &empty}, Logprobs: jsonNull}},
						Usage:          usage,
						PromptTokenIDs: jsonNull,
					}))
				}
				if reason == nil && tmpl.ok() {
					ev = tmpl.appendEvent(ev, text)
					break
				}
				c := chatChunkChoice{Delta: chatDelta{Content: &text}, Logprobs: jsonNull, FinishReason: reason, TokenIDs: jsonNull}
				if reason != nil {
					c.StopReason = jsonNull
				}
				if g.continuousUsage {
					u := usageUnset(g.usage(p.out, p.cached))
					usage = &u
				}
				ev = appendSSE(ev, marshal(chatChunk{
					ID: g.id, Object: "chat.completion.chunk", Created: created, Model: model,
					Choices: []chatChunkChoice{c}, Usage: usage,
				}))
			case reason == nil && tmpl.ok():
				ev = tmpl.appendEvent(ev, text)
			default:
				var usage *usageInfo
				if g.continuousUsage {
					u := g.usage(p.out, p.cached)
					usage = &u
				}
				ev = appendSSE(ev, marshal(completionChunk{
					ID: g.id, Object: "text_completion", Created: created, Model: model,
					Choices: []completionChunkChoice{{
						Text: text, Logprobs: jsonNull, FinishReason: reason, StopReason: jsonNull,
						PromptTokenIDs: jsonNull, TokenIDs: jsonNull,
					}},
					Usage: usage,
				}))
			}
			sent = p.out
			if !p.done {
				if err := sw.sendRaw(ev); err != nil {
					fail()
					return
				}
			}
		}
		if p.done {
			if p.err != nil {
				msg := marshal(map[string]errorInfo{"error": {Message: p.err.Error(), Type: "InternalServerError", Code: http.StatusInternalServerError}})
				ev = appendSSE(ev, pyJSONSpacing(msg))
			} else if g.includeUsage {
				u := g.usage(p.out, p.cached)
				if g.chat {
					uu := usageUnset(u)
					ev = appendSSE(ev, marshal(chatChunk{ID: g.id, Object: "chat.completion.chunk", Created: created, Model: model, Choices: []chatChunkChoice{}, Usage: &uu}))
				} else {
					ev = appendSSE(ev, marshal(completionChunk{ID: g.id, Object: "text_completion", Created: created, Model: model, Choices: []completionChunkChoice{}, Usage: &u}))
				}
			}
			// The last token, the usage chunk and [DONE] leave in one write.
			ev = appendSSE(ev, sseDone)
			sw.sendRaw(ev) //nolint:errcheck // ending anyway
			return
		}
		select {
		case <-ctx.Done():
			fail()
			return
		case <-req.notify:
		}
	}
}

// pyJSONSpacing re-spaces compact JSON as Python's json.dumps does (", " and
// ": "), which vLLM uses for mid-stream error events.
func pyJSONSpacing(b []byte) []byte {
	var out bytes.Buffer
	inStr, esc := false, false
	for _, c := range b {
		out.WriteByte(c)
		switch {
		case esc:
			esc = false
		case c == '\\' && inStr:
			esc = true
		case c == '"':
			inStr = !inStr
		case !inStr && (c == ',' || c == ':'):
			out.WriteByte(' ')
		}
	}
	return out.Bytes()
}
