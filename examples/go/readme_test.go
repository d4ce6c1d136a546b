package watchcache

import (
	"os"
	"strings"
	"testing"
)

// The README's Go block is Example's body, dedented by one tab.
func TestReadmeExample(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Skip(err)
	}
	src, err := os.ReadFile("example_test.go")
	must(t, err)
	s := string(src)
	body := s[strings.Index(s, "func Example() {\n")+len("func Example() {\n") : strings.Index(s, "\t// Output:")]
	lines := strings.Split(strings.TrimRight(body, "\n"), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimPrefix(l, "\t")
	}
	if !strings.Contains(string(readme), "```go\n"+strings.Join(lines, "\n")+"\n```") {
		t.Fatal("README.md's Go example differs from Example in example_test.go")
	}
}
