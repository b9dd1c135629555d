// Package deptest enforces the project's import rules (tailscale's
// tstest/deptest style): the layering is checked, not hoped for.
package deptest

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/ttftlab/ttftlab"

type file struct {
	pkg     string // directory relative to the module root
	name    string
	imports []string
}

func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found")
		}
		dir = parent
	}
}

// sources returns every non-test Go file of the module with its imports.
func sources(t *testing.T) []file {
	t.Helper()
	root := repoRoot(t)
	var out []file
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); path != root && (strings.HasPrefix(n, ".") || n == "testdata" || n == "bin" || path == filepath.Join(root, "results")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		fl := file{pkg: filepath.ToSlash(filepath.Dir(rel)), name: filepath.Base(rel)}
		for _, im := range f.Imports {
			p, _ := strconv.Unquote(im.Path.Value)
			fl.imports = append(fl.imports, p)
		}
		out = append(out, fl)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) < 10 {
		t.Fatalf("found only %d source files; the walk is broken", len(out))
	}
	return out
}

func TestOnlyGPUNodeImportsNVML(t *testing.T) {
	for _, f := range sources(t) {
		for _, im := range f.imports {
			if strings.HasPrefix(im, "github.com/NVIDIA/go-nvml") && f.pkg != "gpunode" {
				t.Errorf("%s/%s imports %s: only gpunode may import go-nvml", f.pkg, f.name, im)
			}
		}
	}
}

func TestOnlyMembershipImportsMemberlist(t *testing.T) {
	for _, f := range sources(t) {
		for _, im := range f.imports {
			if strings.HasPrefix(im, "github.com/hashicorp/memberlist") && f.pkg != "internal/membership" {
				t.Errorf("%s/%s imports %s: only internal/membership may", f.pkg, f.name, im)
			}
		}
	}
}

// TestOnlyMetricsImportsClientGolang keeps Prometheus out of the domain
// packages: they feed internal/metrics through observer interfaces, and
// cmd/ttftlab wires the registries to --metrics-addr.
func TestOnlyMetricsImportsClientGolang(t *testing.T) {
	for _, f := range sources(t) {
		for _, im := range f.imports {
			if strings.HasPrefix(im, "github.com/prometheus/client_golang") && f.pkg != "internal/metrics" && f.pkg != "cmd/ttftlab" {
				t.Errorf("%s/%s imports %s: only internal/metrics (and cmd/ttftlab, to serve it) may; feed it through an observer interface", f.pkg, f.name, im)
			}
		}
	}
}

// TestOnlyAdaptersImportGRPC keeps gRPC at the edges: only internal/node
// (server and dial options, the one dial path), the generated code and the
// packages' server.go/grpc.go adapters may import it. cmd/ttftlab may not:
// it wires flags to internal/node.
func TestOnlyAdaptersImportGRPC(t *testing.T) {
	for _, f := range sources(t) {
		allowed := f.pkg == "internal/gen/ttftlab/v1" || f.pkg == "internal/node" ||
			(f.pkg != "cmd/ttftlab" && (f.name == "server.go" || f.name == "grpc.go"))
		for _, im := range f.imports {
			if (im == "google.golang.org/grpc" || strings.HasPrefix(im, "google.golang.org/grpc/")) && !allowed {
				t.Errorf("%s/%s imports %s: move the gRPC code into internal/node or the package's server.go or grpc.go adapter", f.pkg, f.name, im)
			}
		}
	}
}

// moduleGraph maps each package of the module to the module packages its
// non-test files import.
func moduleGraph(t *testing.T) map[string][]string {
	t.Helper()
	graph := map[string][]string{}
	for _, f := range sources(t) {
		for _, im := range f.imports {
			if strings.HasPrefix(im, module+"/") {
				graph[f.pkg] = append(graph[f.pkg], strings.TrimPrefix(im, module+"/"))
			}
		}
	}
	return graph
}

// reaches returns every module package root depends on, root included.
func reaches(graph map[string][]string, root string) map[string]bool {
	seen := map[string]bool{}
	stack := []string{root}
	for len(stack) > 0 {
		p := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[p] {
			continue
		}
		seen[p] = true
		stack = append(stack, graph[p]...)
	}
	return seen
}

// TestGPUNodeDoesNotBuildInTheSimulator keeps the simulator out of every
// gpunode: the sim resets its own simulated caches (--cold-state), so
// `go list -deps ./gpunode` must not list internal/sim.
func TestGPUNodeDoesNotBuildInTheSimulator(t *testing.T) {
	graph := moduleGraph(t)
	if len(graph["gpunode"]) == 0 {
		t.Fatal("gpunode imports no module package; the walk is broken")
	}
	if reaches(graph, "gpunode")["internal/sim"] {
		t.Error("gpunode depends on internal/sim: let the sim reset its own state (its --cold-state flag) instead of importing it")
	}
}

// TestAgentAndCoordinatorBuildWithoutCGO checks that none of them reaches gpunode
// (and so go-nvml and cgo) through the module's own packages.
func TestAgentAndCoordinatorBuildWithoutCGO(t *testing.T) {
	graph := moduleGraph(t)
	for _, root := range []string{"agent", "internal/oai", "coordinator", "internal/sim", "internal/node"} {
		if reaches(graph, root)["gpunode"] {
			t.Errorf("%s depends on gpunode, which pulls in go-nvml and cgo", root)
		}
	}
}

// TestOAIIsALeaf keeps the OpenAI client (internal/oai) below the agent:
// it imports no module package (so neither agent nor the generated gRPC
// contract) and no gRPC, even in a server.go; agent takes it through its
// Sender interface.
func TestOAIIsALeaf(t *testing.T) {
	for _, f := range packageSources(t, "internal/oai") {
		for _, im := range f.imports {
			if strings.HasPrefix(im, module+"/") {
				t.Errorf("%s/%s imports %s: internal/oai is a leaf; move what needs it into agent", f.pkg, f.name, im)
			}
			if im == "google.golang.org/grpc" || strings.HasPrefix(im, "google.golang.org/grpc/") || strings.HasPrefix(im, "google.golang.org/protobuf") {
				t.Errorf("%s/%s imports %s: the client speaks HTTP only", f.pkg, f.name, im)
			}
		}
	}
	graph := moduleGraph(t)
	if !slices.Contains(graph["agent"], "internal/oai") {
		t.Error("agent does not import internal/oai; update this test with the package map in docs/design.md")
	}
}

// TestOAITestIsForTestsOnly keeps the fake OpenAI server
// (internal/oai/oaitest) out of the binary: only _test.go files may import
// it, and it imports no module package, so internal/oai's own tests can use
// it without an import cycle.
func TestOAITestIsForTestsOnly(t *testing.T) {
	const fake = "internal/oai/oaitest"
	n := 0
	for _, f := range sources(t) {
		if f.pkg == fake {
			n++
		}
		for _, im := range f.imports {
			if im == module+"/"+fake && f.pkg != fake {
				t.Errorf("%s/%s imports %s: only tests may use the fake server", f.pkg, f.name, im)
			}
			if f.pkg == fake && strings.HasPrefix(im, module+"/") {
				t.Errorf("%s/%s imports %s: the fake must stay a leaf so internal/oai's tests can import it", f.pkg, f.name, im)
			}
		}
	}
	if n == 0 {
		t.Fatal("no internal/oai/oaitest source found; the walk is broken")
	}
}

// TestPureLayersReachGRPCOnlyThroughGen keeps gRPC out of the pure layers'
// dependencies: the results layer, the plots and the leaf libraries import
// no package that imports gRPC, except the generated package
// internal/gen/ttftlab/v1 for its messages. That one remains because
// protoc-gen-go-grpc writes a file's service stubs into the Go package of
// its messages: taking it away means moving the services into a .proto file
// of their own, a different proto package (buf's STANDARD lint wants one
// go_package per package), so new full method names on the wire.
func TestPureLayersReachGRPCOnlyThroughGen(t *testing.T) {
	const gen = "internal/gen/ttftlab/v1"
	importsGRPC, have := map[string]bool{}, map[string]bool{}
	for _, f := range sources(t) {
		have[f.pkg] = true
		for _, im := range f.imports {
			if im == "google.golang.org/grpc" || strings.HasPrefix(im, "google.golang.org/grpc/") {
				importsGRPC[f.pkg] = true
			}
		}
	}
	if !importsGRPC[gen] {
		t.Fatalf("%s imports no gRPC: the service stubs moved out; make this rule strict (no exception)", gen)
	}
	graph := moduleGraph(t)
	for _, root := range []string{"coordinator/results", "internal/plot", "internal/hdr", "internal/kvcalc", "internal/specerr", "internal/vllmlog"} {
		if !have[root] {
			t.Errorf("%s has no source: update this test", root)
		}
		for p := range reaches(graph, root) {
			if importsGRPC[p] && p != gen {
				t.Errorf("%s reaches %s, which imports gRPC: keep gRPC in the adapters", root, p)
			}
		}
	}
}

// TestVLLMFlagIsALeaf keeps internal/vllmflag, the one knobs → `vllm serve`
// flags mapping, importable by both gpunode and the results layer: it
// imports only the standard library.
func TestVLLMFlagIsALeaf(t *testing.T) {
	for _, f := range packageSources(t, "internal/vllmflag") {
		for _, im := range f.imports {
			if strings.Contains(strings.SplitN(im, "/", 2)[0], ".") {
				t.Errorf("%s/%s imports %s: internal/vllmflag imports only the standard library, so gpunode and coordinator/results can share it", f.pkg, f.name, im)
			}
		}
	}
	graph := moduleGraph(t)
	for _, p := range []string{"gpunode", "coordinator/results"} {
		if !slices.Contains(graph[p], "internal/vllmflag") {
			t.Errorf("%s does not import internal/vllmflag: the knobs → flags mapping is written twice again", p)
		}
	}
}

// packageSources returns the non-test files of one package, failing when
// there are none (the walk would be broken).
func packageSources(t *testing.T, pkg string) []file {
	t.Helper()
	var out []file
	for _, f := range sources(t) {
		if f.pkg == pkg {
			out = append(out, f)
		}
	}
	if len(out) == 0 {
		t.Fatalf("no %s source found; the walk is broken", pkg)
	}
	return out
}
