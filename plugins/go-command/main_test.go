package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var shop = []Label{{"app.kubernetes.io/part-of", "shop"}, {"team", "payments"}}

func TestStampAddsAndReplaces(t *testing.T) {
	in := `# header comment
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels:
    app: web   # kept
    team: "old"
spec:
  template:
    metadata:
      labels:
        app: web
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec: {}
---
replicaCount: 3
`
	want := `# header comment
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels:
    app: web   # kept
    team: "payments"
    app.kubernetes.io/part-of: "shop"
spec:
  template:
    metadata:
      labels:
        app: web
---
apiVersion: v1
kind: Service
metadata:
  name: web
  labels:
    app.kubernetes.io/part-of: "shop"
    team: "payments"
spec: {}
---
replicaCount: 3
`
	out, results := Stamp(in, shop, true)
	if out != want {
		t.Fatalf("got\n%s\nwant\n%s", out, want)
	}
	if len(results) != 2 || results[0].Diagnostics[0].Line != 4 || results[1].Diagnostics[0].Line != 17 {
		t.Fatalf("results %+v", results)
	}
	again, results := Stamp(out, shop, true)
	if again != out {
		t.Fatalf("not idempotent:\n%s", again)
	}
	for _, r := range results {
		if len(r.Changed) != 0 || len(r.Diagnostics) != 0 {
			t.Fatalf("rerun changed something: %+v", r)
		}
	}
}

func TestStampEdgeCases(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"empty labels flow", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n    name: c\n    labels: {}\n",
			"apiVersion: v1\nkind: ConfigMap\nmetadata:\n    name: c\n    labels:\n      app.kubernetes.io/part-of: \"shop\"\n      team: \"payments\"\n"},
		{"no final newline", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c",
			"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  labels:\n    app.kubernetes.io/part-of: \"shop\"\n    team: \"payments\"\n"},
		{"empty metadata", "apiVersion: v1\nkind: ConfigMap\nmetadata:\ndata: {}\n",
			"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  labels:\n    app.kubernetes.io/part-of: \"shop\"\n    team: \"payments\"\ndata: {}\n"},
		{"crlf and annotations", "apiVersion: v1\r\nkind: ConfigMap\r\nmetadata:\r\n  annotations:\r\n    note: |\r\n      two\r\n      lines\r\n",
			"apiVersion: v1\r\nkind: ConfigMap\r\nmetadata:\r\n  annotations:\r\n    note: |\r\n      two\r\n      lines\r\n  labels:\r\n    app.kubernetes.io/part-of: \"shop\"\r\n    team: \"payments\"\r\n"},
		{"multi-line label value replaced", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  labels:\n    team: >-\n      x\n    # trailing\nx: 1\n",
			"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  labels:\n    team: \"payments\"\n    app.kubernetes.io/part-of: \"shop\"\n    # trailing\nx: 1\n"},
		{"not a manifest", "a: 1\nb: [2]\n", "a: 1\nb: [2]\n"},
		{"top-level list", "- apiVersion: v1\n  kind: X\n", "- apiVersion: v1\n  kind: X\n"},
	}
	for _, c := range cases {
		out, _ := Stamp(c.in, shop, true)
		if out != c.want {
			t.Errorf("%s: got\n%q\nwant\n%q", c.name, out, c.want)
		}
	}
}

func TestStampSkipsWhatItCannotEdit(t *testing.T) {
	for _, in := range []string{
		"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
		"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  labels: {a: b}\n",
		"apiVersion: v1\nkind: ConfigMap\ndata: {}\n",
	} {
		out, results := Stamp(in, shop, true)
		if out != in || len(results) != 1 || results[0].Diagnostics[0].Code != "labels.skipped" {
			t.Errorf("%q: %q %+v", in, out, results)
		}
	}
}

func TestConflictWithoutOverwrite(t *testing.T) {
	in := "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  labels:\n    team: core\n"
	out, results := Stamp(in, shop, false)
	if out != in || !results[0].Conflict || results[0].Diagnostics[0].Line != 6 ||
		!strings.Contains(results[0].Diagnostics[0].Message, `"core"`) {
		t.Fatalf("%q %+v", out, results)
	}
}

func TestConfig(t *testing.T) {
	for _, raw := range []string{`{}`, `null`, `{"labels":{}}`, `{"labels":{"a":"b"},"extra":1}`,
		`{"labels":{"-bad":"x"}}`, `{"labels":{"Bad.Prefix/x":"y"}}`, `{"labels":{"a":"not valid"}}`, `{"labels":"x"}`} {
		if _, _, problems := parseConfig([]byte(raw)); len(problems) == 0 {
			t.Errorf("%s: accepted", raw)
		}
	}
	labels, overwrite, problems := parseConfig([]byte(`{"labels":{"z":"","example.com/a":"1.0"},"overwrite":false}`))
	if len(problems) != 0 || overwrite || labels[0].Key != "example.com/a" || labels[1].Key != "z" {
		t.Fatalf("%v %v %v", labels, overwrite, problems)
	}
}

func TestRunExitCodes(t *testing.T) {
	var out, errs bytes.Buffer
	if code := run(strings.NewReader(`{"version":"0.1.0","config":{}}`), &out, &errs); code != exitInvalidConfig {
		t.Fatalf("code %d", code)
	}
	if code := run(strings.NewReader(`{"version":"9"}`), &out, &errs); code != exitRejected {
		t.Fatalf("code %d", code)
	}
}

func TestWalkSorted(t *testing.T) {
	dir := t.TempDir()
	for _, p := range []string{"b.yaml", "a/z.yml", "a/b.txt", "A.yaml", "a.yaml"} {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755)
		os.WriteFile(filepath.Join(dir, p), nil, 0o644)
	}
	got, err := walkSorted(dir)
	if err != nil || strings.Join(got, " ") != "A.yaml a/z.yml a.yaml b.yaml" {
		t.Fatalf("%v %v", got, err)
	}
}
