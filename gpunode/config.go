package gpunode

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/goccy/go-yaml"
)

// File is the node's local profile configuration, as read from YAML by
// LoadFile. Only this file says what a node may run: an RPC picks one of
// its profiles by name and sets typed knobs; it never passes a command,
// an argument or an environment variable.
//
//	profiles:
//	  - name: qwen
//	    kind: vllm             # vllm | sim | command
//	    launcher: serve        # vllm only: serve | api_server
//	    env: {CUDA_VISIBLE_DEVICES: "0", HF_HOME: /data/hf}
//	    dtype: bfloat16
//	    defaults: {model: Qwen/Qwen2.5-1.5B-Instruct, max_model_len: 8192}
type File struct {
	Profiles []FileProfile `yaml:"profiles"`
}

// FileProfile is one profile in the YAML file; see Profile for the
// meaning of each field.
type FileProfile struct {
	Name               string            `yaml:"name"`
	Kind               string            `yaml:"kind"`
	Launcher           string            `yaml:"launcher"`
	Command            []string          `yaml:"command"`
	Env                map[string]string `yaml:"env"`
	Host               string            `yaml:"host"`
	Port               int               `yaml:"port"`
	Dtype              string            `yaml:"dtype"`
	KVCacheDtype       string            `yaml:"kv_cache_dtype"`
	TensorParallelSize int               `yaml:"tensor_parallel_size"`
	StateDir           string            `yaml:"state_dir"`
	AllowedModels      []string          `yaml:"allowed_models"`
	AllowedKnobs       []string          `yaml:"allowed_knobs"`
	Defaults           FileKnobs         `yaml:"defaults"`
}

// FileKnobs are a profile's default knobs in the YAML file.
type FileKnobs struct {
	Model                string  `yaml:"model"`
	ServedModelName      string  `yaml:"served_model_name"`
	MaxModelLen          int     `yaml:"max_model_len"`
	GPUMemoryUtilization float64 `yaml:"gpu_memory_utilization"`
	MaxNumSeqs           int     `yaml:"max_num_seqs"`
	MaxNumBatchedTokens  int     `yaml:"max_num_batched_tokens"`
	EnforceEager         *bool   `yaml:"enforce_eager"`
	EnablePrefixCaching  *bool   `yaml:"enable_prefix_caching"`
	EnableChunkedPrefill *bool   `yaml:"enable_chunked_prefill"`
	GPU                  string  `yaml:"gpu"`
}

// yamlPosRE finds go-yaml's "[line:col] message" error form.
var yamlPosRE = regexp.MustCompile(`^\[(\d+):(\d+)\] (.*)$`)

// yamlError turns a go-yaml error into "path:line:col: message".
func yamlError(path string, err error) error {
	first, _, _ := strings.Cut(err.Error(), "\n")
	if m := yamlPosRE.FindStringSubmatch(first); m != nil {
		return fmt.Errorf("%s:%s:%s: %s", path, m[1], m[2], m[3])
	}
	return fmt.Errorf("%s: %s", path, first)
}

// ParseFile parses the YAML profile configuration in data; path names it
// in errors. Unknown keys, duplicate keys and wrongly typed values are
// refused with the file, line and column (go-yaml refuses duplicate keys by default).
func ParseFile(path string, data []byte) (File, error) {
	var f File
	if len(bytes.TrimSpace(data)) == 0 {
		return f, fmt.Errorf("%s: empty; list at least one profile under the profiles key", path)
	}
	if err := checkConfigBytes(path, data); err != nil {
		return f, err
	}
	if err := yaml.UnmarshalWithOptions(data, &f, yaml.DisallowUnknownField()); err != nil {
		return f, yamlError(path, err)
	}
	if len(f.Profiles) == 0 {
		return f, fmt.Errorf("%s: no profiles; list at least one under the profiles key", path)
	}
	return f, nil
}

// ToProfiles builds the node's profiles from the file. simExe is the
// executable of the simulator (normally this ttftlab binary), used by
// sim profiles that give no command.
func (f File) ToProfiles(simExe string) (map[string]Profile, error) {
	out := map[string]Profile{}
	var errs []error
	for i, fp := range f.Profiles {
		p := Profile{
			Name:               fp.Name,
			Kind:               fp.Kind,
			Launcher:           fp.Launcher,
			Command:            slices.Clone(fp.Command),
			Env:                fp.Env,
			Host:               fp.Host,
			Port:               fp.Port,
			Dtype:              fp.Dtype,
			KVCacheDtype:       fp.KVCacheDtype,
			TensorParallelSize: fp.TensorParallelSize,
			StateDir:           fp.StateDir,
			AllowedModels:      fp.AllowedModels,
			AllowedKnobs:       fp.AllowedKnobs,
			Defaults: Knobs{
				Model:                fp.Defaults.Model,
				ServedModelName:      fp.Defaults.ServedModelName,
				MaxModelLen:          fp.Defaults.MaxModelLen,
				GPUMemoryUtilization: fp.Defaults.GPUMemoryUtilization,
				MaxNumSeqs:           fp.Defaults.MaxNumSeqs,
				MaxNumBatchedTokens:  fp.Defaults.MaxNumBatchedTokens,
				EnforceEager:         fp.Defaults.EnforceEager,
				EnablePrefixCaching:  fp.Defaults.EnablePrefixCaching,
				EnableChunkedPrefill: fp.Defaults.EnableChunkedPrefill,
				GPU:                  fp.Defaults.GPU,
			},
		}
		where := "profiles[" + strconv.Itoa(i) + "]"
		if p.Name == "" {
			errs = append(errs, fmt.Errorf("%s: name is empty; give the profile a name", where))
			continue
		}
		if err := checkName("name", p.Name); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
			continue
		}
		if _, dup := out[p.Name]; dup {
			errs = append(errs, fmt.Errorf("%s: profile %q is defined twice; rename one", where, p.Name))
			continue
		}
		if len(p.Command) == 0 {
			switch {
			case p.Kind == KindSim:
				p.Command = []string{simExe, "sim"}
			case p.Kind == KindVLLM && p.Launcher == LauncherAPIServer:
				p.Command = []string{"python3", "-m", "vllm.entrypoints.openai.api_server"}
			case p.Kind == KindVLLM:
				p.Command = []string{"vllm", "serve"}
			}
		}
		if p.Kind == KindVLLM {
			// Python block-buffers stdout on a pipe; unbuffered output
			// keeps the arrival times of log lines honest.
			if p.Env == nil {
				p.Env = map[string]string{}
			}
			if _, ok := p.Env["PYTHONUNBUFFERED"]; !ok {
				p.Env["PYTHONUNBUFFERED"] = "1"
			}
		}
		if err := p.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
			continue
		}
		out[p.Name] = p
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

// LoadFile reads and checks the YAML profile configuration at path and
// returns its profiles, by name. simExe is as for File.ToProfiles.
func LoadFile(path, simExe string) (map[string]Profile, error) {
	data, err := readConfig(path)
	if err != nil {
		return nil, fmt.Errorf("read profile config: %w", err)
	}
	f, err := ParseFile(path, data)
	if err != nil {
		return nil, err
	}
	profs, err := f.ToProfiles(simExe)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return profs, nil
}
