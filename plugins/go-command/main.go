// Command go-command is a command-mode transform plugin (design/plugins.md §4) written in mainline Go, to show
// that the plugin interface is not Rust-only. It is built with `GOOS=wasip1 GOARCH=wasm go build`, which gives a
// wasip1 core module; the host runs components only, so the module is adapted with the wasmtime 48.0.8 preview1
// command adapter (tests/src/plugins.rs does both, see plugins/README.md).
//
// What it does: a label stamper. It sets the labels of config.labels in `metadata.labels` of every Kubernetes
// manifest (a YAML document with top-level `apiVersion`, `kind` and a block-style `metadata`) in every `*.yaml` and
// `*.yml` file under /work, visited in sorted order.
//
//   - config: {"labels": {"<key>": "<value>", …} (required, 1 to 64 entries, Kubernetes label syntax),
//     "overwrite": bool (default true)}.
//   - A missing label is added (a missing `labels:` is created at the end of `metadata`), a different value is
//     replaced; values are written double-quoted. Labels already right are left alone, so a rerun changes
//     nothing. Labels the config does not name are kept. Other lines are kept byte for byte, comments too.
//   - `overwrite: false`: a label that exists with another value is an error diagnostic (path, line), exit 1,
//     and no file is written.
//   - A manifest without `metadata`, or whose `metadata`/`labels` is not a block mapping, is left alone with a
//     warning; documents that are not manifests (no apiVersion or kind) are skipped silently.
//   - Bad config: error diagnostics `config.invalid`, exit 2. An unsupported protocol version (not 0.1.x): an
//     error diagnostic, exit 1. I/O trouble: a message on stderr, exit 3 (the host reports a plugin error).
//     Non-zero codes leave through `wasi:cli/exit.exit-with-code` (exit_wasip1.go): os.Exit would turn them all
//     into 1.
//
// It is a line-based editor, not a YAML parser (the Go standard library has none and the sample uses no other
// module): flow-style metadata, anchors and aliases in `labels` are out of scope and get the warning above.
//
// Protocol (command mode): stdin is {"version":"0.1.0","config":{…},"context":{…}}; every JSON-object line on
// stdout is a diagnostic {"severity","code","message","path"?,"line"?,"hint"?}, any other line goes to the log;
// the exit status is 0 = success, 2 = invalid config, anything else = rejected when error diagnostics were
// printed, else a plugin error.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

const (
	work = "/work"

	exitOK            = 0
	exitRejected      = 1
	exitInvalidConfig = 2
	exitInternal      = 3

	maxLabels = 64
)

type input struct {
	Version string          `json:"version"`
	Config  json.RawMessage `json:"config"`
	Context struct {
		Artifact string `json:"artifact"`
	} `json:"context"`
}

type config struct {
	Labels    map[string]string `json:"labels"`
	Overwrite *bool             `json:"overwrite"`
}

// Diagnostic is one stdout line; absent fields are omitted.
type Diagnostic struct {
	Severity string `json:"severity"`
	Code     string `json:"code"`
	Message  string `json:"message"`
	Path     string `json:"path,omitempty"`
	Line     int    `json:"line,omitempty"`
	Hint     string `json:"hint,omitempty"`
}

// Label is one label to set.
type Label struct{ Key, Value string }

func main() {
	code := run(os.Stdin, os.Stdout, os.Stderr) // stdout and stderr are unbuffered: nothing to flush
	if code != 0 {
		exitWithCode(uint32(code)) // does not return under wasip1, see exit_wasip1.go
	}
	os.Exit(code)
}

func run(stdin io.Reader, stdout, stderr io.Writer) int {
	emit := func(d Diagnostic) {
		b, err := json.Marshal(d)
		if err != nil {
			panic(err)
		}
		fmt.Fprintf(stdout, "%s\n", b)
	}
	raw, err := io.ReadAll(stdin)
	if err != nil {
		fmt.Fprintf(stderr, "go-command: reading stdin: %v\n", err)
		return exitInternal
	}
	var in input
	if err := json.Unmarshal(raw, &in); err != nil {
		fmt.Fprintf(stderr, "go-command: stdin is not the expected JSON: %v\n", err)
		return exitInternal
	}
	if in.Version != "0.1" && !strings.HasPrefix(in.Version, "0.1.") {
		emit(Diagnostic{Severity: "error", Code: "go-command.version",
			Message: fmt.Sprintf("unsupported protocol version %q", in.Version)})
		return exitRejected
	}
	labels, overwrite, problems := parseConfig(in.Config)
	if len(problems) > 0 {
		for _, p := range problems {
			emit(Diagnostic{Severity: "error", Code: "config.invalid", Message: "config: " + p})
		}
		return exitInvalidConfig
	}

	files, err := walkSorted(work)
	if err != nil {
		fmt.Fprintf(stderr, "go-command: walking %s: %v\n", work, err)
		return exitInternal
	}
	type edit struct {
		path string
		text []byte
	}
	var edits []edit
	var diags []Diagnostic
	rejected := false
	manifests, stamped := 0, 0
	for _, rel := range files {
		text, err := os.ReadFile(filepath.Join(work, rel))
		if err != nil {
			fmt.Fprintf(stderr, "go-command: reading %s: %v\n", rel, err)
			return exitInternal
		}
		out, results := Stamp(string(text), labels, overwrite)
		for _, r := range results {
			for i := range r.Diagnostics {
				r.Diagnostics[i].Path = rel
			}
			diags = append(diags, r.Diagnostics...)
			if r.Manifest {
				manifests++
			}
			if len(r.Changed) > 0 {
				stamped++
			}
			rejected = rejected || r.Conflict
		}
		if out != string(text) {
			edits = append(edits, edit{rel, []byte(out)})
		}
	}
	for _, d := range diags {
		emit(d)
	}
	if rejected {
		return exitRejected
	}
	for _, e := range edits {
		if err := os.WriteFile(filepath.Join(work, e.path), e.text, 0o644); err != nil {
			fmt.Fprintf(stderr, "go-command: writing %s: %v\n", e.path, err)
			return exitInternal
		}
	}
	fmt.Fprintf(stdout, "go-command: artifact %s: labels set on %d of %d manifest(s) in %d file(s)\n",
		in.Context.Artifact, stamped, manifests, len(files))
	return exitOK
}

var (
	labelName   = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
	labelPrefix = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
)

// parseConfig returns the labels sorted by key, the overwrite flag and what is wrong with the config.
func parseConfig(raw json.RawMessage) ([]Label, bool, []string) {
	if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		raw = json.RawMessage("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var c config
	if err := dec.Decode(&c); err != nil {
		return nil, false, []string{err.Error()}
	}
	var problems []string
	if len(c.Labels) == 0 {
		problems = append(problems, "labels is required and must name at least one label")
	}
	if len(c.Labels) > maxLabels {
		problems = append(problems, fmt.Sprintf("labels: at most %d labels, got %d", maxLabels, len(c.Labels)))
	}
	keys := make([]string, 0, len(c.Labels))
	for k := range c.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	labels := make([]Label, 0, len(keys))
	for _, k := range keys {
		v := c.Labels[k]
		if msg := checkKey(k); msg != "" {
			problems = append(problems, fmt.Sprintf("labels: key %q: %s", k, msg))
		}
		if v != "" && (len(v) > 63 || !labelName.MatchString(v)) {
			problems = append(problems, fmt.Sprintf(
				"labels: value %q of %q: at most 63 characters [A-Za-z0-9_.-], starting and ending alphanumeric", v, k))
		}
		labels = append(labels, Label{k, v})
	}
	overwrite := c.Overwrite == nil || *c.Overwrite
	return labels, overwrite, problems
}

func checkKey(k string) string {
	name := k
	if i := strings.LastIndexByte(k, '/'); i >= 0 {
		prefix := k[:i]
		name = k[i+1:]
		if len(prefix) > 253 || !labelPrefix.MatchString(prefix) {
			return "the prefix must be a DNS subdomain (lowercase, at most 253 characters)"
		}
	}
	if len(name) == 0 || len(name) > 63 || !labelName.MatchString(name) {
		return "the name must be 1 to 63 characters [A-Za-z0-9_.-], starting and ending alphanumeric"
	}
	return ""
}

// walkSorted lists the regular `*.yaml`/`*.yml` files under root, relative with `/`, in bytewise order of
// their path components (fs.WalkDir reads each directory sorted by name). Symlinks are not followed.
func walkSorted(root string) ([]string, error) {
	var out []string
	err := fs.WalkDir(os.DirFS(root), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() && (strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
			out = append(out, p)
		}
		return nil
	})
	return out, err
}

// DocResult says what Stamp did to one document.
type DocResult struct {
	Manifest    bool
	Changed     []string // keys added or replaced
	Conflict    bool
	Diagnostics []Diagnostic // without Path
}

type line struct {
	text   string // without the line break
	eol    string
	indent int
	blank  bool // empty, whitespace or a comment
}

func splitLines(s string) []line {
	var out []line
	for len(s) > 0 {
		i := strings.IndexByte(s, '\n')
		var l line
		if i < 0 {
			l.text, s = s, ""
		} else {
			l.text, l.eol, s = s[:i], "\n", s[i+1:]
			if strings.HasSuffix(l.text, "\r") {
				l.text, l.eol = l.text[:len(l.text)-1], "\r\n"
			}
		}
		trimmed := strings.TrimLeft(l.text, " ")
		l.indent = len(l.text) - len(trimmed)
		l.blank = strings.TrimSpace(trimmed) == "" || strings.HasPrefix(trimmed, "#")
		out = append(out, l)
	}
	return out
}

func isSeparator(t string) bool {
	return t == "..." || t == "---" || strings.HasPrefix(t, "--- ") || strings.HasPrefix(t, "---\t")
}

var keyLine = regexp.MustCompile(`^("(?:[^"\\]|\\.)*"|'(?:[^']|'')*'|[^\s#'"{\[\-?:][^#:]*?|-[^\s#:][^#:]*?)\s*:(?:\s+(.*))?$`)

// splitKey parses `key: rest` (the line without indentation); rest has its comment removed.
func splitKey(t string) (key, rest string, ok bool) {
	m := keyLine.FindStringSubmatch(t)
	if m == nil {
		return "", "", false
	}
	return unquote(m[1]), stripComment(m[2]), true
}

func stripComment(s string) string {
	if strings.HasPrefix(s, "#") {
		return ""
	}
	inSingle, inDouble := false, false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && inDouble:
			i++
		case c == '"' && !inSingle:
			inDouble = !inDouble
		case c == '\'' && !inDouble:
			inSingle = !inSingle
		case c == '#' && !inSingle && !inDouble && i > 0 && (s[i-1] == ' ' || s[i-1] == '\t'):
			return strings.TrimSpace(s[:i])
		}
	}
	return strings.TrimSpace(s)
}

func unquote(s string) string {
	switch {
	case len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"':
		var v string
		if json.Unmarshal([]byte(s), &v) == nil {
			return v
		}
	case len(s) >= 2 && s[0] == '\'' && s[len(s)-1] == '\'':
		return strings.ReplaceAll(s[1:len(s)-1], "''", "'")
	}
	return s
}

// Words YAML 1.1 reads as something other than a string: keys spelled like this are quoted.
var special = map[string]bool{"y": true, "n": true, "yes": true, "no": true, "on": true, "off": true,
	"true": true, "false": true, "null": true, "~": true}

func formatLabel(indent int, l Label, eol string) string {
	key := l.Key
	first := key[0]
	if !(first >= 'a' && first <= 'z' || first >= 'A' && first <= 'Z') || special[strings.ToLower(key)] {
		key = `"` + key + `"`
	}
	// Label values are [A-Za-z0-9_.-]: quoting never needs an escape.
	return strings.Repeat(" ", indent) + key + `: "` + l.Value + `"` + eol
}

// Stamp sets labels in every manifest of a multi-document YAML text; it returns the new text and one result per
// document.
func Stamp(text string, labels []Label, overwrite bool) (string, []DocResult) {
	lines := splitLines(text)
	eol := "\n"
	if strings.Contains(text, "\r\n") {
		eol = "\r\n"
	}
	var out strings.Builder
	var results []DocResult
	start, doc := 0, 0
	flush := func(end int) {
		// Documents are numbered from 1, counting only those with content (a leading `---` starts none).
		for _, l := range lines[start:end] {
			if !l.blank {
				doc++
				break
			}
		}
		r, replaced := stampDoc(lines[start:end], start, doc, labels, overwrite, eol)
		for _, l := range replaced {
			out.WriteString(l)
		}
		if r.Manifest {
			results = append(results, r)
		}
	}
	for i, l := range lines {
		if l.indent == 0 && isSeparator(l.text) {
			flush(i)
			out.WriteString(l.text + l.eol)
			start = i + 1
		}
	}
	flush(len(lines))
	return out.String(), results
}

// stampDoc edits one document (lines[first:…] of the file, doc counts from 1) and returns its lines.
func stampDoc(lines []line, first, doc int, labels []Label, overwrite bool, eol string) (DocResult, []string) {
	var r DocResult
	keep := func() []string {
		out := make([]string, len(lines))
		for i, l := range lines {
			out[i] = l.text + l.eol
		}
		return out
	}
	lineNo := func(i int) int { return first + i + 1 }
	// Top-level keys.
	top := map[string]int{}
	var topOrder []int
	for i, l := range lines {
		if l.blank || l.indent > 0 {
			continue
		}
		key, _, ok := splitKey(l.text)
		if !ok {
			return r, keep() // a top-level sequence, a flow mapping, a directive…: not a manifest
		}
		if _, dup := top[key]; !dup {
			top[key] = i
		}
		topOrder = append(topOrder, i)
	}
	_, hasAPI := top["apiVersion"]
	kindAt, hasKind := top["kind"]
	if !hasAPI || !hasKind {
		return r, keep()
	}
	r.Manifest = true
	_, kind, _ := splitKey(lines[kindAt].text)
	skip := func(at int, msg string) (DocResult, []string) {
		r.Diagnostics = append(r.Diagnostics, Diagnostic{Severity: "warning", Code: "labels.skipped",
			Message: fmt.Sprintf("document %d (%s): %s; left alone", doc, kind, msg), Line: lineNo(at),
			Hint: "write metadata and metadata.labels as block mappings"})
		return r, keep()
	}
	metaAt, ok := top["metadata"]
	if !ok {
		return skip(kindAt, "no metadata")
	}
	if _, rest, _ := splitKey(lines[metaAt].text); rest != "" {
		return skip(metaAt, "metadata is not a block mapping")
	}
	// The metadata block: up to the next top-level key.
	metaEnd := len(lines)
	for _, i := range topOrder {
		if i > metaAt {
			metaEnd = i
			break
		}
	}
	child := -1
	lastContent := metaAt // last non-blank line of the block
	for i := metaAt + 1; i < metaEnd; i++ {
		if lines[i].blank {
			continue
		}
		if child < 0 {
			child = lines[i].indent
		}
		if lines[i].indent < child {
			return skip(i, "metadata is indented inconsistently")
		}
		lastContent = i
	}
	if child < 0 {
		child = 2
	}
	name := ""
	labelsAt := -1
	for i := metaAt + 1; i < metaEnd; i++ {
		l := lines[i]
		if l.blank || l.indent != child {
			continue
		}
		key, rest, ok := splitKey(l.text[l.indent:])
		if !ok {
			return skip(i, "metadata is not a block mapping")
		}
		switch key {
		case "name":
			name = unquote(rest)
		case "labels":
			labelsAt = i
		}
	}
	what := kind
	if name != "" {
		what += " " + name
	}

	type edit struct {
		at, end int // replaces lines[at:end]; at == end inserts before lines[at]
		text    []string
	}
	var edits []edit
	if labelsAt < 0 {
		block := []string{strings.Repeat(" ", child) + "labels:" + eol}
		for _, l := range labels {
			block = append(block, formatLabel(child+2, l, eol))
			r.Changed = append(r.Changed, l.Key)
		}
		edits = append(edits, edit{lastContent + 1, lastContent + 1, block})
	} else {
		_, rest, _ := splitKey(lines[labelsAt].text[child:])
		entriesFrom := labelsAt + 1
		switch rest {
		case "":
		case "{}":
			edits = append(edits, edit{labelsAt, labelsAt + 1,
				[]string{strings.Repeat(" ", child) + "labels:" + lines[labelsAt].eol}})
		default:
			return skip(labelsAt, "metadata.labels is not a block mapping")
		}
		// Entries: lines indented deeper than `labels:`, up to the next key of metadata.
		entriesEnd := metaEnd
		inner := -1
		for i := entriesFrom; i < metaEnd; i++ {
			if lines[i].blank {
				continue
			}
			if lines[i].indent <= child {
				entriesEnd = i
				break
			}
			if inner < 0 {
				inner = lines[i].indent
			}
		}
		if inner < 0 {
			inner = child + 2
		}
		type entry struct {
			at, end int
			value   string
		}
		existing := map[string]entry{}
		lastEntryEnd := entriesFrom
		for i := entriesFrom; i < entriesEnd; i++ {
			l := lines[i]
			if l.blank {
				continue
			}
			if l.indent < inner {
				return skip(i, "metadata.labels is indented inconsistently")
			}
			if l.indent > inner {
				continue // continuation of the previous entry
			}
			key, rest, ok := splitKey(l.text[l.indent:])
			if !ok || strings.HasPrefix(rest, "&") || strings.HasPrefix(rest, "*") {
				return skip(i, "metadata.labels has an entry this editor does not understand")
			}
			end := i + 1
			for end < entriesEnd && (lines[end].blank || lines[end].indent > inner) {
				end++
			}
			// Trailing blank lines and comments after an entry stay where they are.
			for end > i+1 && lines[end-1].blank {
				end--
			}
			value := unquote(rest)
			if end > i+1 {
				value = "\x00" // a multi-line value: never equal to a label value
			}
			existing[key] = entry{i, end, value}
			lastEntryEnd = end
		}
		var added []string
		for _, l := range labels {
			e, found := existing[l.Key]
			switch {
			case found && e.value == l.Value:
			case found && !overwrite:
				shown := e.value
				if shown == "\x00" {
					shown = "a multi-line value"
				} else {
					shown = fmt.Sprintf("%q", shown)
				}
				r.Conflict = true
				r.Diagnostics = append(r.Diagnostics, Diagnostic{Severity: "error", Code: "labels.conflict",
					Message: fmt.Sprintf("%s: label %s is %s, config.labels wants %q", what, l.Key, shown, l.Value),
					Line:    lineNo(e.at), Hint: "set overwrite: true or change config.labels"})
			case found:
				edits = append(edits, edit{e.at, e.end, []string{formatLabel(inner, l, lines[e.at].eol)}})
				r.Changed = append(r.Changed, l.Key)
			default:
				added = append(added, formatLabel(inner, l, eol))
				r.Changed = append(r.Changed, l.Key)
			}
		}
		if len(added) > 0 {
			edits = append(edits, edit{lastEntryEnd, lastEntryEnd, added})
		}
	}
	if r.Conflict {
		r.Changed = nil
		return r, keep()
	}
	if len(r.Changed) > 0 {
		r.Diagnostics = append(r.Diagnostics, Diagnostic{Severity: "info", Code: "labels.stamped",
			Message: fmt.Sprintf("%s: set %s", what, strings.Join(r.Changed, ", ")), Line: lineNo(metaAt)})
	}
	// Apply the edits (they never overlap) from the top.
	sort.SliceStable(edits, func(a, b int) bool { return edits[a].at < edits[b].at })
	out := make([]string, 0, len(lines)+len(labels)+1)
	next := 0
	for _, e := range edits {
		for ; next < e.at; next++ {
			out = append(out, lines[next].text+lines[next].eol)
		}
		if e.at > 0 && e.at == len(lines) && lines[e.at-1].eol == "" {
			out[len(out)-1] += eol // inserting after a last line that had no line break
		}
		out = append(out, e.text...)
		next = e.end
	}
	for ; next < len(lines); next++ {
		out = append(out, lines[next].text+lines[next].eol)
	}
	return r, out
}
