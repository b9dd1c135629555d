package gpunode

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"unicode"
	"unicode/utf8"

	"github.com/goccy/go-yaml/lexer"
	"github.com/goccy/go-yaml/token"

	"github.com/ttftlab/ttftlab/internal/vllmflag"
)

// Engine kinds a Profile can have.
const (
	KindSim     = "sim"
	KindVLLM    = "vllm"
	KindCommand = "command"
)

// DefaultHost is the address engines listen on unless a profile says
// otherwise. Engines are reached only from this host by default.
const DefaultHost = "127.0.0.1"

// Profile is one engine the node may run, from its local configuration. An
// RPC picks a profile by name and sets Knobs; it can never change Command,
// Env, Host or Port.
type Profile struct {
	Name string
	// Kind is KindSim, KindVLLM or KindCommand.
	Kind string
	// Command is the executable and its leading arguments: "vllm" "serve"
	// for vLLM, the ttftlab executable and "sim" for the simulator. For
	// KindCommand it is the whole command line, in which the placeholders
	// {host}, {port}, {model} and {served_model_name} are replaced by
	// typed values.
	Command []string
	// Env is added to the node's environment for the engine.
	Env map[string]string
	// Defaults are the knobs used where a start request leaves one unset.
	Defaults Knobs
	// Host is the listen address; empty means DefaultHost.
	Host string
	// Port fixes the port; 0 means a free loopback port picked at start.
	Port int

	// Launcher picks how a KindVLLM profile starts vLLM: LauncherServe
	// (`vllm serve MODEL`, the default) or LauncherAPIServer (`python3 -m
	// vllm.entrypoints.openai.api_server --model MODEL`). Command, when set,
	// replaces the launcher's executable and leading arguments.
	Launcher string
	// Dtype, KVCacheDtype and TensorParallelSize are profile-level vLLM
	// settings (--dtype, --kv-cache-dtype, --tensor-parallel-size); empty
	// or 0 leaves vLLM's default. A request cannot change them.
	Dtype              string
	KVCacheDtype       string
	TensorParallelSize int
	// StateDir is the simulator's --state-dir (KindSim only), where it
	// keeps its simulated page-cache and compile-cache state; cold starts
	// reset that state.
	StateDir string
	// AllowedModels, when not empty, lists the models a request may ask
	// for (the default model is always allowed).
	AllowedModels []string
	// AllowedKnobs, when not nil, lists the knobs a request may set (by
	// their proto names, such as "max_model_len"); nil allows every knob
	// the profile's kind takes.
	AllowedKnobs []string
}

// Launchers of a KindVLLM profile.
const (
	LauncherServe     = "serve"
	LauncherAPIServer = "api_server"
)

// Values vLLM accepts for --dtype and --kv-cache-dtype.
var (
	ValidDtypes        = []string{"auto", "half", "float16", "bfloat16", "float", "float32"}
	ValidKVCacheDtypes = []string{"auto", "fp8", "fp8_e4m3", "fp8_e5m2"}
)

// MaxTensorParallelSize bounds tensor_parallel_size.
const MaxTensorParallelSize = 64

// KnobNames are the knobs a start request may set, by their proto names.
var KnobNames = []string{
	"model", "served_model_name", "max_model_len", "gpu_memory_utilization",
	"max_num_seqs", "max_num_batched_tokens", "enforce_eager",
	"enable_prefix_caching", "enable_chunked_prefill", "gpu",
}

// setKnobs returns the names of the knobs k sets.
func (k Knobs) setKnobs() []string {
	set := map[string]bool{
		"model":                  k.Model != "",
		"served_model_name":      k.ServedModelName != "",
		"max_model_len":          k.MaxModelLen != 0,
		"gpu_memory_utilization": k.GPUMemoryUtilization != 0,
		"max_num_seqs":           k.MaxNumSeqs != 0,
		"max_num_batched_tokens": k.MaxNumBatchedTokens != 0,
		"enforce_eager":          k.EnforceEager != nil,
		"enable_prefix_caching":  k.EnablePrefixCaching != nil,
		"enable_chunked_prefill": k.EnableChunkedPrefill != nil,
		"gpu":                    k.GPU != "",
	}
	var out []string
	for _, n := range KnobNames {
		if set[n] {
			out = append(out, n)
		}
	}
	return out
}

// CheckRequest checks that a start request's knobs (before defaults are
// applied) are ones this profile lets a request set: every knob must be in
// AllowedKnobs (when set), the model in AllowedModels (when set), and a
// KindCommand profile takes only the knobs its command or env uses.
func (p Profile) CheckRequest(req Knobs) error {
	for _, name := range req.setKnobs() {
		if p.AllowedKnobs != nil && !slices.Contains(p.AllowedKnobs, name) {
			allowed := "none"
			if len(p.AllowedKnobs) > 0 {
				allowed = strings.Join(p.AllowedKnobs, ", ")
			}
			return &KnobError{Field: name, Value: "(set)", Fix: fmt.Sprintf("profile %q does not let a request set it (allowed_knobs: %s); leave it unset or use another profile", p.Name, allowed)}
		}
	}
	if req.Model != "" && len(p.AllowedModels) > 0 && req.Model != p.Defaults.Model && !slices.Contains(p.AllowedModels, req.Model) {
		return &KnobError{Field: "model", Value: strconv.Quote(req.Model), Fix: fmt.Sprintf("profile %q allows only %s", p.Name, strings.Join(append([]string{p.Defaults.Model}, p.AllowedModels...), ", "))}
	}
	return nil
}

// Knobs are the typed, range-checked engine settings a start request may
// change. The zero value of each field means "unset": the profile's
// default, then the engine's own.
type Knobs struct {
	Model                string
	ServedModelName      string
	MaxModelLen          int
	GPUMemoryUtilization float64
	MaxNumSeqs           int
	MaxNumBatchedTokens  int
	EnforceEager         *bool
	EnablePrefixCaching  *bool
	EnableChunkedPrefill *bool
	// GPU names a simulated GPU, such as "h200"; only the sim engine reads it.
	GPU string
}

// Override returns k with every field that o sets replaced by o's value.
func (k Knobs) Override(o Knobs) Knobs {
	if o.Model != "" {
		k.Model = o.Model
	}
	if o.ServedModelName != "" {
		k.ServedModelName = o.ServedModelName
	}
	if o.MaxModelLen != 0 {
		k.MaxModelLen = o.MaxModelLen
	}
	if o.GPUMemoryUtilization != 0 {
		k.GPUMemoryUtilization = o.GPUMemoryUtilization
	}
	if o.MaxNumSeqs != 0 {
		k.MaxNumSeqs = o.MaxNumSeqs
	}
	if o.MaxNumBatchedTokens != 0 {
		k.MaxNumBatchedTokens = o.MaxNumBatchedTokens
	}
	if o.EnforceEager != nil {
		k.EnforceEager = new(*o.EnforceEager)
	}
	if o.EnablePrefixCaching != nil {
		k.EnablePrefixCaching = new(*o.EnablePrefixCaching)
	}
	if o.EnableChunkedPrefill != nil {
		k.EnableChunkedPrefill = new(*o.EnableChunkedPrefill)
	}
	if o.GPU != "" {
		k.GPU = o.GPU
	}
	return k
}

// Served returns the served model name: ServedModelName, else Model.
func (k Knobs) Served() string {
	if k.ServedModelName != "" {
		return k.ServedModelName
	}
	return k.Model
}

// KnobError is a knob that failed validation. Its message names the field,
// the value and the fix.
type KnobError struct {
	Field string
	Value string
	Fix   string
}

func (e *KnobError) Error() string {
	return fmt.Sprintf("%s %s is invalid: %s", e.Field, e.Value, e.Fix)
}

// Knob limits.
const (
	MaxModelLenLimit         = 10_000_000
	MaxNumSeqsLimit          = 65536
	MaxNumBatchedTokensLimit = 10_000_000
	maxNameLen               = 512
)

// ValidateSet checks the knobs that are set, leaving unset (zero) fields
// alone. A start request is checked with it before the profile's defaults
// are applied.
func (k Knobs) ValidateSet() error {
	var errs []error
	if k.Model != "" {
		errs = append(errs, checkModelName("model", k.Model))
	}
	if k.ServedModelName != "" {
		errs = append(errs, checkModelName("served_model_name", k.ServedModelName))
	}
	if k.GPU != "" {
		errs = append(errs, checkName("gpu", k.GPU))
	}
	errs = append(errs,
		checkRange("max_model_len", k.MaxModelLen, MaxModelLenLimit),
		checkRange("max_num_seqs", k.MaxNumSeqs, MaxNumSeqsLimit),
		checkRange("max_num_batched_tokens", k.MaxNumBatchedTokens, MaxNumBatchedTokensLimit),
	)
	if u := k.GPUMemoryUtilization; u != 0 && !(u > 0 && u <= 1) {
		errs = append(errs, &KnobError{
			Field: "gpu_memory_utilization",
			Value: strconv.FormatFloat(u, 'g', -1, 64),
			Fix:   "must be in (0, 1], a fraction of GPU memory such as 0.9 (or 0 for the profile default)",
		})
	}
	return errors.Join(errs...)
}

// Validate checks resolved knobs: every set field is in range, and Model is
// set. Its errors are *KnobError values (joined when there are several).
func (k Knobs) Validate() error {
	var errs []error
	if k.Model == "" {
		errs = append(errs, &KnobError{Field: "model", Value: `""`, Fix: "set a model name or path, such as Qwen/Qwen2.5-1.5B-Instruct, or give the profile a default model"})
	}
	errs = append(errs, k.ValidateSet())
	return errors.Join(errs...)
}

func checkRange(field string, v, limit int) error {
	if v == 0 || (v >= 1 && v <= limit) {
		return nil
	}
	return &KnobError{
		Field: field,
		Value: strconv.Itoa(v),
		Fix:   fmt.Sprintf("must be between 1 and %d (or 0 for the profile default)", limit),
	}
}

// checkName checks a short identifier such as a simulated GPU name:
// letters, digits, '.', '_' and '-', not starting with '-' or '.'.
func checkName(field, v string) error {
	bad := func(fix string) error { return &KnobError{Field: field, Value: strconv.Quote(v), Fix: fix} }
	const rule = "a name is letters, digits, '.', '_' and '-', such as h200"
	switch {
	case len(v) > maxIDPart:
		return bad(fmt.Sprintf("is %d bytes, more than %d: %s", len(v), maxIDPart, rule))
	case v[0] == '-' || v[0] == '.':
		return bad(fmt.Sprintf("must not start with %q: %s", v[0], rule))
	}
	if i := strings.IndexFunc(v, func(r rune) bool { return !isIDChar(r) }); i >= 0 {
		return bad(fmt.Sprintf("%s at byte %d is not allowed%s: %s", charName(v, i), i+1, spaceNote(v, i), rule))
	}
	return nil
}

// maxIDPart is the longest Hugging Face repository id part (the owner or
// the name), as the Hub enforces.
const maxIDPart = 96

// modelRule is the rule a model or served model name must follow, quoted
// in every refusal.
const modelRule = "a model must be a Hugging Face repository id (name or org/name: letters, digits, '.', '_' and '-', " +
	"no '..', not starting with '-' or '.', at most 96 characters per part, such as Qwen/Qwen2.5-1.5B-Instruct) " +
	"or an absolute path (letters, digits and . _ - / + @ : , only, no '..' segment, such as /models/qwen2.5-1.5b)"

func isIDChar(r rune) bool {
	return r < unicode.MaxASCII && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-')
}

// isPathChar admits the characters of a local model path that no shell,
// argument parser or URL treats specially.
func isPathChar(r rune) bool {
	return isIDChar(r) || strings.ContainsRune("/+@:,", r)
}

// spaceNote adds "whitespace or control character" to a refusal of one.
func spaceNote(v string, i int) string {
	r, _ := utf8.DecodeRuneInString(v[i:])
	if unicode.IsSpace(r) || unicode.IsControl(r) {
		return " (names must not contain whitespace or control characters)"
	}
	return ""
}

// charName names the character of v at byte i for an error message.
func charName(v string, i int) string {
	r, _ := utf8.DecodeRuneInString(v[i:])
	if r == utf8.RuneError || !unicode.IsPrint(r) {
		return fmt.Sprintf("byte %#02x", v[i])
	}
	return fmt.Sprintf("character %q", r)
}

// checkModelName checks a model or served model name. It reaches the
// engine's command line (and a command profile's arguments), so only a
// Hugging Face repository id or a plain absolute path is accepted: nothing
// a shell, vLLM's argument parser or a URL could read as syntax.
func checkModelName(field, v string) error {
	bad := func(format string, a ...any) error {
		return &KnobError{Field: field, Value: strconv.Quote(v), Fix: fmt.Sprintf(format, a...) + ": " + modelRule}
	}
	if len(v) > maxNameLen {
		return bad("is %d bytes, more than %d", len(v), maxNameLen)
	}
	if strings.HasPrefix(v, "/") {
		if i := strings.IndexFunc(v, func(r rune) bool { return !isPathChar(r) }); i >= 0 {
			return bad("%s at byte %d is not allowed in a path%s", charName(v, i), i+1, spaceNote(v, i))
		}
		for _, seg := range strings.Split(v[1:], "/") {
			if seg == ".." {
				return bad("has a '..' segment")
			}
		}
		return nil
	}
	parts := strings.Split(v, "/")
	if len(parts) > 2 {
		return bad("has %d '/'-separated parts; a repository id has at most 2 (a relative path is not accepted, give an absolute one)", len(parts))
	}
	off := 0
	for _, part := range parts {
		switch {
		case part == "":
			return bad("has an empty part at byte %d", off+1)
		case len(part) > maxIDPart:
			return bad("part %q is %d characters, more than %d", part, len(part), maxIDPart)
		case part[0] == '-' || part[0] == '.':
			return bad("must not start with %q (part %q, byte %d)", part[0], part, off+1)
		}
		if i := strings.IndexFunc(part, func(r rune) bool { return !isIDChar(r) }); i >= 0 {
			return bad("%s at byte %d is not allowed%s", charName(part, i), off+i+1, spaceNote(part, i))
		}
		if i := strings.Index(part, ".."); i >= 0 {
			return bad("'..' at byte %d is not allowed", off+i+1)
		}
		off += len(part) + 1
	}
	return nil
}

// shells are the executables that run a script given with -c.
var shells = []string{"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "yash", "fish", "csh", "tcsh", "busybox"}

// shellScript reports whether argv runs a shell on an inline script (sh -c,
// bash -lc, env sh -c, /usr/bin/env -S bash -c, busybox sh -c, …), and
// returns the shell's name.
func shellScript(argv []string) (string, bool) {
	i := 0
	if i < len(argv) && filepath.Base(argv[i]) == "env" {
		// Skip env's options and VAR=value assignments.
		for i++; i < len(argv) && (strings.HasPrefix(argv[i], "-") || strings.Contains(argv[i], "=")); i++ {
		}
	}
	if i >= len(argv) || !slices.Contains(shells, filepath.Base(argv[i])) {
		return "", false
	}
	sh := filepath.Base(argv[i])
	for _, a := range argv[i+1:] {
		if strings.HasPrefix(a, "-") && !strings.HasPrefix(a, "--") && strings.Contains(a, "c") {
			return sh, true
		}
		if !strings.HasPrefix(a, "-") && sh != "busybox" {
			// The first operand is a script file: no -c.
			return "", false
		}
	}
	return "", false
}

// checkNoShellPlaceholders refuses a command that hands substituted values
// to a shell: in `sh -c "vllm serve {model}"` a model name becomes shell
// syntax. Placeholders are safe only as whole argv elements of a command
// that is not a shell script.
func (p Profile) checkNoShellPlaceholders() error {
	sh, ok := shellScript(p.Command)
	if !ok {
		return nil
	}
	for i, a := range p.Command {
		if m := placeholderRE.FindString(a); m != "" {
			return fmt.Errorf("profile %q: command runs %s -c with %s in argument %d, so a substituted value would be read as shell syntax; "+
				"run the engine directly with each placeholder as its own element (command: [vllm, serve, \"{model}\", --port, \"{port}\"]), "+
				"or call a script file that reads it as \"$1\" or from env (command: [%s, /path/serve.sh, \"{model}\"])", p.Name, sh, m, i, sh)
		}
	}
	return nil
}

// MaxConfigBytes caps a profile file. Real ones are a few kilobytes.
const MaxConfigBytes = 1 << 20

// checkConfigBytes refuses a profile file that is too large or uses YAML
// anchors or aliases, before it reaches the YAML decoder: a few hundred
// bytes of nested aliases (a "billion laughs") expand to gigabytes when
// decoded, and go-yaml has no expansion limit. The scan is go-yaml's own
// lexer, so quoted text that merely contains '&' or '*' is not refused.
func checkConfigBytes(path string, data []byte) error {
	if len(data) > MaxConfigBytes {
		return fmt.Errorf("%s: %d bytes, more than the %d a profile file may have; a profile file lists a few engines, check that this is the right file", path, len(data), MaxConfigBytes)
	}
	for _, tk := range lexer.Tokenize(string(data)) {
		switch tk.Type {
		case token.AnchorType, token.AliasType, token.MergeKeyType:
			line, col := 0, 0
			if tk.Position != nil {
				line, col = tk.Position.Line, tk.Position.Column
			}
			return fmt.Errorf("%s:%d:%d: YAML anchors, aliases and merge keys (%q) are not accepted in a profile file, because nested aliases can expand a small file into gigabytes; write each value out in full",
				path, line, col, tk.Value)
		}
	}
	return nil
}

// readConfig reads a profile file of at most MaxConfigBytes.
func readConfig(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxConfigBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return data, checkConfigBytes(path, data)
}

// BuiltinProfiles returns the profiles every node has: "sim" runs the
// simulated engine as `exe sim`, and "vllm" runs `vllm serve`.
func BuiltinProfiles(exe string) map[string]Profile {
	return map[string]Profile{
		"sim": {
			Name:    "sim",
			Kind:    KindSim,
			Command: []string{exe, "sim"},
			Defaults: Knobs{
				Model:        "Qwen/Qwen2.5-1.5B-Instruct",
				GPU:          "h200",
				EnforceEager: new(true),
			},
		},
		"vllm": {
			Name:    "vllm",
			Kind:    KindVLLM,
			Command: []string{"vllm", "serve"},
			// Python block-buffers stdout on a pipe; unbuffered output keeps
			// the arrival times of log lines honest.
			Env:      map[string]string{"PYTHONUNBUFFERED": "1"},
			Defaults: Knobs{Model: "Qwen/Qwen2.5-1.5B-Instruct"},
		},
	}
}

// Validate checks the profile's own settings.
func (p Profile) Validate() error {
	switch p.Kind {
	case KindSim, KindVLLM, KindCommand:
	default:
		return fmt.Errorf("profile %q: kind %q is unknown; use %q, %q or %q", p.Name, p.Kind, KindSim, KindVLLM, KindCommand)
	}
	if len(p.Command) == 0 || p.Command[0] == "" {
		return fmt.Errorf("profile %q: command is empty; set the engine executable", p.Name)
	}
	if p.Port < 0 || p.Port > 65535 {
		return fmt.Errorf("profile %q: port %d is out of range; use 1..65535, or 0 to pick a free port", p.Name, p.Port)
	}
	if err := p.Defaults.ValidateSet(); err != nil {
		return fmt.Errorf("profile %q defaults: %w", p.Name, err)
	}
	if p.Launcher != "" && p.Kind != KindVLLM {
		return fmt.Errorf("profile %q: launcher is for kind %q only; remove it", p.Name, KindVLLM)
	}
	switch p.Launcher {
	case "", LauncherServe, LauncherAPIServer:
	default:
		return fmt.Errorf("profile %q: launcher %q is unknown; use %q or %q", p.Name, p.Launcher, LauncherServe, LauncherAPIServer)
	}
	if p.Dtype != "" && !slices.Contains(ValidDtypes, p.Dtype) {
		return fmt.Errorf("profile %q: dtype %q is not one vLLM accepts; use one of %s", p.Name, p.Dtype, strings.Join(ValidDtypes, ", "))
	}
	if p.KVCacheDtype != "" && !slices.Contains(ValidKVCacheDtypes, p.KVCacheDtype) {
		return fmt.Errorf("profile %q: kv_cache_dtype %q is not one vLLM accepts; use one of %s", p.Name, p.KVCacheDtype, strings.Join(ValidKVCacheDtypes, ", "))
	}
	if p.TensorParallelSize < 0 || p.TensorParallelSize > MaxTensorParallelSize {
		return fmt.Errorf("profile %q: tensor_parallel_size %d is out of range; use 1..%d, or 0 for vLLM's default (1)", p.Name, p.TensorParallelSize, MaxTensorParallelSize)
	}
	if devs, ok := p.Env["CUDA_VISIBLE_DEVICES"]; ok && p.TensorParallelSize > 1 && devs != "" {
		if n := len(strings.Split(devs, ",")); n < p.TensorParallelSize {
			return fmt.Errorf("profile %q: tensor_parallel_size %d needs %d GPUs but CUDA_VISIBLE_DEVICES=%q names %d; list more GPUs or lower it", p.Name, p.TensorParallelSize, p.TensorParallelSize, devs, n)
		}
	}
	if p.Kind != KindVLLM && (p.Dtype != "" || p.KVCacheDtype != "" || p.TensorParallelSize != 0) {
		return fmt.Errorf("profile %q: dtype, kv_cache_dtype and tensor_parallel_size are for kind %q only; remove them", p.Name, KindVLLM)
	}
	if p.StateDir != "" && p.Kind != KindSim {
		return fmt.Errorf("profile %q: state_dir is for kind %q only; remove it", p.Name, KindSim)
	}
	for _, k := range p.AllowedKnobs {
		if !slices.Contains(KnobNames, k) {
			return fmt.Errorf("profile %q: allowed_knobs names %q, which is not a knob; use some of %s", p.Name, k, strings.Join(KnobNames, ", "))
		}
	}
	if err := p.checkNoShellPlaceholders(); err != nil {
		return err
	}
	for _, m := range p.AllowedModels {
		if err := checkModelName("allowed_models", m); err != nil {
			return fmt.Errorf("profile %q: %w", p.Name, err)
		}
	}
	for k, v := range p.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
			return fmt.Errorf("profile %q: env %q is not a valid variable", p.Name, k)
		}
	}
	return nil
}

func (p Profile) host() string {
	if p.Host != "" {
		return p.Host
	}
	return DefaultHost
}

// Argv returns the engine's command line for the resolved knobs k and the
// port. It is built from typed values only. k should already be merged
// with the profile's defaults (p.Defaults.Override(request)).
func (p Profile) Argv(k Knobs, port int) ([]string, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if err := k.Validate(); err != nil {
		return nil, err
	}
	if port < 1 || port > 65535 {
		return nil, fmt.Errorf("port %d is out of range; use 1..65535", port)
	}
	argv := slices.Clone(p.Command)
	switch p.Kind {
	case KindCommand:
		return p.commandArgv(argv, k, port)
	case KindVLLM:
		if p.Launcher == LauncherAPIServer {
			argv = append(argv, "--model", k.Model)
		} else {
			argv = append(argv, k.Model)
		}
	case KindSim:
		argv = append(argv, "--model", k.Model)
	}
	argv = append(argv, "--host", p.host(), "--port", strconv.Itoa(port))
	argv = append(argv, vllmflag.Knobs{MaxModelLen: k.MaxModelLen, MaxNumBatchedTokens: k.MaxNumBatchedTokens,
		MaxNumSeqs: k.MaxNumSeqs, EnableChunkedPrefill: k.EnableChunkedPrefill, GPUMemoryUtilization: k.GPUMemoryUtilization,
		EnablePrefixCaching: k.EnablePrefixCaching, EnforceEager: k.EnforceEager != nil && *k.EnforceEager,
		ServedModelName: k.Served()}.Args()...)
	if p.Kind == KindSim && k.GPU != "" {
		argv = append(argv, "--gpu", k.GPU)
	}
	if p.Kind == KindSim && p.StateDir != "" {
		argv = append(argv, "--state-dir", p.StateDir)
	}
	if p.Dtype != "" {
		argv = append(argv, "--dtype", p.Dtype)
	}
	if p.KVCacheDtype != "" {
		argv = append(argv, "--kv-cache-dtype", p.KVCacheDtype)
	}
	if p.TensorParallelSize > 0 {
		argv = append(argv, "--tensor-parallel-size", strconv.Itoa(p.TensorParallelSize))
	}
	return argv, nil
}

func (p Profile) commandArgv(argv []string, k Knobs, port int) ([]string, error) {
	// A generic server understands only the knobs its profile hands it
	// through an env placeholder such as MAX_MODEL_LEN: "{max_model_len}";
	// refuse the others rather than drop them silently.
	unsupported := map[string]bool{
		"max_model_len":          k.MaxModelLen != 0,
		"gpu_memory_utilization": k.GPUMemoryUtilization != 0,
		"max_num_seqs":           k.MaxNumSeqs != 0,
		"max_num_batched_tokens": k.MaxNumBatchedTokens != 0,
		"enforce_eager":          k.EnforceEager != nil,
		"enable_prefix_caching":  k.EnablePrefixCaching != nil,
		"enable_chunked_prefill": k.EnableChunkedPrefill != nil,
		"gpu":                    k.GPU != "",
	}
	for _, f := range slices.Sorted(maps.Keys(unsupported)) {
		if unsupported[f] && !p.envUses(f) {
			return nil, &KnobError{Field: f, Value: "(set)", Fix: fmt.Sprintf("profile %q runs a generic command that does not take this knob (no env value uses {%s}); leave it unset", p.Name, f)}
		}
	}
	r := strings.NewReplacer(
		"{host}", p.host(),
		"{port}", strconv.Itoa(port),
		"{model}", k.Model,
		"{served_model_name}", k.Served(),
	)
	for i := range argv {
		argv[i] = r.Replace(argv[i])
	}
	return argv, nil
}

// envUses reports whether any env value of the profile holds {knob}.
func (p Profile) envUses(knob string) bool {
	for _, v := range p.Env {
		if strings.Contains(v, "{"+knob+"}") {
			return true
		}
	}
	return false
}

// knobValues are the typed values of the env placeholders; an unset knob
// has no value, and an env variable that uses it is left out.
func knobValues(k Knobs, host string, port int) map[string]string {
	v := map[string]string{
		"host":              host,
		"port":              strconv.Itoa(port),
		"model":             k.Model,
		"served_model_name": k.Served(),
	}
	setInt := func(name string, n int) {
		if n != 0 {
			v[name] = strconv.Itoa(n)
		}
	}
	setInt("max_model_len", k.MaxModelLen)
	setInt("max_num_seqs", k.MaxNumSeqs)
	setInt("max_num_batched_tokens", k.MaxNumBatchedTokens)
	if k.GPUMemoryUtilization != 0 {
		v["gpu_memory_utilization"] = strconv.FormatFloat(k.GPUMemoryUtilization, 'f', -1, 64)
	}
	setBool := func(name string, b *bool) {
		if b != nil {
			v[name] = map[bool]string{true: "1", false: "0"}[*b]
		}
	}
	setBool("enforce_eager", k.EnforceEager)
	setBool("enable_prefix_caching", k.EnablePrefixCaching)
	setBool("enable_chunked_prefill", k.EnableChunkedPrefill)
	if k.GPU != "" {
		v["gpu"] = k.GPU
	}
	return v
}

var placeholderRE = regexp.MustCompile(`\{([a-z_]+)\}`)

// EnvFor returns the profile's env with placeholders ({port}, {model},
// {max_model_len}, …) replaced by the resolved knobs' typed values, as
// sorted KEY=VALUE pairs. A variable whose value names an unset knob is
// left out, so that the engine sees its own default.
func (p Profile) EnvFor(k Knobs, port int) []string {
	vals := knobValues(k, p.host(), port)
	var out []string
	for _, key := range slices.Sorted(maps.Keys(p.Env)) {
		v := p.Env[key]
		missing := false
		v = placeholderRE.ReplaceAllStringFunc(v, func(m string) string {
			name := m[1 : len(m)-1]
			if val, ok := vals[name]; ok {
				return val
			}
			if slices.Contains(KnobNames, name) {
				missing = true
			}
			return m
		})
		if !missing {
			out = append(out, key+"="+v)
		}
	}
	return out
}

// PortInUseError reports that an engine's port is taken.
type PortInUseError struct {
	Port int
}

func (e *PortInUseError) Error() string {
	return fmt.Sprintf("port %d is already in use by another process; stop it or choose another port", e.Port)
}

// FreePort returns a free TCP port on host, found by listening on port 0.
func FreePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("pick a free port on %s: %w", host, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// checkPortFree fails with *PortInUseError when something listens on
// host:port, or when the port cannot be bound. vLLM binds with
// SO_REUSEPORT, so a second vLLM could share the port silently; this check
// is the only guard.
func checkPortFree(host string, port int) error {
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	if c, err := net.DialTimeout("tcp", dialable(addr, host, port), dialTimeout); err == nil {
		c.Close()
		return &PortInUseError{Port: port}
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return &PortInUseError{Port: port}
		}
		return fmt.Errorf("check port %d on %s: %w", port, host, err)
	}
	return l.Close()
}

// dialable turns a wildcard listen address into one a client can dial.
func dialable(addr, host string, port int) string {
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	}
	return addr
}
