package archtest

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

const module = "github.com/gpumarket/gpumarket/"

// layer of each package (path below the module); packages not listed are
// adapters.
var (
	pure = []string{"internal/match", "internal/auction", "internal/ledger", "internal/verify", "internal/deploy"}
	core = []string{"internal/coord"}
	// shared names adapter-level packages that hold what several adapters
	// of one technology have in common, and the adapters that may import
	// them: sqlstore is the SQL both database stores run.
	shared = map[string][]string{
		"internal/sqlstore": {"internal/sqlite", "internal/postgres"},
	}
	// pureUses names the pure packages another pure package may use:
	// the deployment reconciler places replicas with match's index.
	pureUses = map[string][]string{"internal/deploy": {"internal/match"}}
)

func layerOf(pkg string) string {
	switch {
	case pkg == "internal/market":
		return "market"
	case slices.Contains(pure, pkg):
		return "pure"
	case slices.Contains(core, pkg):
		return "core"
	case pkg == "internal/cli":
		return "cli"
	case strings.HasPrefix(pkg, "cmd/"):
		return "main"
	case pkg == "internal/archtest":
		return "test"
	}
	return "adapter"
}

// allowed reports whether a package of layer from may import pkg (of
// layer to), and why not.
func allowed(from, fromPkg, to, toPkg string) (bool, string) {
	switch from {
	case "market":
		return false, "market imports nothing of gpumarket"
	case "pure":
		return to == "market" || slices.Contains(pureUses[fromPkg], toPkg), "pure packages import only market"
	case "core":
		return to == "market" || to == "pure", "coord imports only market and the pure packages"
	case "adapter":
		if to == "adapter" {
			// A package's own subpackages (gpu/fake under gpu) are its own.
			if strings.HasPrefix(toPkg, fromPkg+"/") {
				return true, ""
			}
			if slices.Contains(shared[toPkg], fromPkg) {
				return true, ""
			}
			return false, "adapters never import each other (wire them in cli)"
		}
		return to != "cli" && to != "main", "nothing imports cli"
	case "main":
		return toPkg == "internal/cli", "main only calls cli.Main"
	case "cli":
		return to != "main", ""
	}
	return true, ""
}

func TestImportDirection(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	imports := map[string]map[string]bool{} // package -> gpumarket imports (non-test files)
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); n == "testdata" || (strings.HasPrefix(n, ".") && path != root) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		pkg := filepath.ToSlash(rel)
		if imports[pkg] == nil {
			imports[pkg] = map[string]bool{}
		}
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if after, ok := strings.CutPrefix(p, module); ok {
				imports[pkg][after] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(imports) < 5 {
		t.Fatalf("found only %d packages under %s; is the walk broken?", len(imports), root)
	}
	for pkg, deps := range imports {
		for dep := range deps {
			if ok, why := allowed(layerOf(pkg), pkg, layerOf(dep), dep); !ok {
				t.Errorf("%s imports %s: %s", pkg, dep, why)
			}
		}
	}
}

// TestRulesCatchViolations checks the rule table itself, so that a rule
// that allows everything cannot pass unnoticed.
func TestRulesCatchViolations(t *testing.T) {
	for _, tc := range []struct{ from, to string }{
		{"internal/market", "internal/ledger"},
		{"internal/ledger", "internal/coord"},
		{"internal/match", "internal/ledger"},
		{"internal/coord", "internal/sqlite"},
		{"internal/sqlite", "internal/httpapi"},
		{"internal/sqlite", "internal/postgres"},
		{"internal/postgres", "internal/sqlite"},
		{"internal/sqlstore", "internal/sqlite"},
		{"internal/httpapi", "internal/sqlstore"},
		{"internal/coord", "internal/sqlstore"},
		{"internal/agent", "internal/apiclient"},
		{"internal/httpapi", "internal/cli"},
		{"cmd/gpumarket", "internal/coord"},
	} {
		if ok, _ := allowed(layerOf(tc.from), tc.from, layerOf(tc.to), tc.to); ok {
			t.Errorf("%s -> %s is allowed; it must not be", tc.from, tc.to)
		}
	}
	// The exceptions are as narrow as meant: the SQL stores may share
	// sqlstore, and no more.
	for _, tc := range []struct{ from, to string }{
		{"internal/sqlite", "internal/sqlstore"},
		{"internal/postgres", "internal/sqlstore"},
		{"internal/gpu", "internal/gpu/fake"},
	} {
		if ok, why := allowed(layerOf(tc.from), tc.from, layerOf(tc.to), tc.to); !ok {
			t.Errorf("%s -> %s is refused (%s); it must be allowed", tc.from, tc.to, why)
		}
	}
	if _, err := os.Stat("../../internal/market"); err != nil {
		t.Fatalf("run from internal/archtest: %v", err)
	}
}
