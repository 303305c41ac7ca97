package topology

import (
	"errors"
	"fmt"
	"io"
	"math/big"

	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/ferryhq/ferry/host/services"
	"github.com/ferryhq/ferry/host/state"
	"github.com/ferryhq/ferry/sdk/routing"
	"github.com/ferryhq/ferry/sdk/transport"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/typeexpr"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// LoadOptions are the caller's inputs to Load.
type LoadOptions struct {
	// Vars overrides variable defaults, as given by --var k=v. Values are
	// taken literally for string variables and parsed as HCL literals
	// (7000, true, ["a"]) for other types.
	Vars map[string]string
	// Schemas returns the settings schema a plugin declares
	// (transport.Info().Settings). Return ErrSchemaUnknown when it cannot
	// be known; then only the syntax of that plugin's settings is checked.
	// A nil Schemas means every schema is unknown. Any other error becomes
	// a diagnostic naming the plugin.
	Schemas func(plugin string) ([]transport.Setting, error)
	// Installed are the plugins found in the plugin directory, by name: a
	// topology may use any of them without a plugin block. nil means the
	// directory is not known; then Ferry's own plugins are assumed.
	Installed map[string]InstalledPlugin
}

// InstalledPlugin is a plugin binary in the plugin directory. Kind and
// AddressType are empty when not known without starting it (then the
// kind is not checked and the address type is the plugin's name).
type InstalledPlugin struct {
	Kind        string
	AddressType string
}

// ErrSchemaUnknown is returned by a LoadOptions.Schemas function for a
// plugin whose settings schema is not available (say, it is not installed
// on this machine).
var ErrSchemaUnknown = errors.New("topology: plugin settings schema unknown")

// Ferry's own plugins and their kinds: what a topology may use when the
// plugin directory is not known (LoadOptions.Installed nil), and the kind
// of one of these found installed.
var builtinPlugins = map[string]string{
	"tcp":        "transport",
	"udp":        "transport",
	"quic":       "transport",
	"serial":     "transport",
	"kafka":      "transport",
	"portal-tcp": "portal",
}

// hostPortPlugins listen and dial at host:port, so their addresses can be
// checked here.
var hostPortPlugins = map[string]bool{"tcp": true, "udp": true, "quic": true, "portal-tcp": true}

// Defaults, mirroring the ferry command's.
const (
	DefaultTransportPlugin = "tcp"
	DefaultPortalPlugin    = "portal-tcp"
	DefaultListenAddress   = "127.0.0.1:0"
	DefaultOutletAddress   = "outlet"
)

// serviceTypes lists the service types a node can start: the built-in
// services plus relay, which the ferry command starts from host/relays.
func serviceTypes() []string {
	out := services.Names()
	if !contains(out, "relay") {
		out = append(out, "relay")
	}
	sort.Strings(out)
	return out
}

// Load reads and checks a topology file. It always returns a non-nil
// Topology so that diagnostics can be printed with its source
// (WriteDiagnostics); use the Topology only when the diagnostics have no
// errors.
func Load(path string, opts LoadOptions) (*Topology, hcl.Diagnostics) {
	src, err := readLimited(path, MaxFileSize+1)
	if err != nil {
		t := &Topology{Path: path, files: map[string]*hcl.File{}}
		return t, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Cannot read topology file",
			Detail:   fmt.Sprintf("%v. Check the file name; topology files are HCL documents such as configs/bridge.hcl.", err),
		}}
	}
	return LoadSource(path, src, opts)
}

// LoadSource is Load for a file already in memory; filename is used in
// diagnostics and to resolve relative plugin paths.
func LoadSource(filename string, src []byte, opts LoadOptions) (*Topology, hcl.Diagnostics) {
	if diags := checkLimits(filename, src); diags.HasErrors() {
		t := &Topology{Path: filename, files: map[string]*hcl.File{}}
		if s := diags[0].Subject; s != nil && lineLen(src, s.Start.Byte) < 200 {
			// Show the line, unless it is one of a huge generated file.
			t.files[filename] = &hcl.File{Bytes: src}
		}
		return t, diags
	}
	p := hclparse.NewParser()
	f, diags := p.ParseHCL(src, filename)
	t := &Topology{
		Path:    filename,
		files:   p.Files(),
		byName:  map[string]*Node{},
		relays:  map[string]*Relay{},
		plugins: map[string]*Plugin{},
	}
	if diags.HasErrors() || f == nil {
		return t, diags
	}
	l := &loader{t: t, opts: opts, dir: filepath.Dir(filename), diags: diags, schemas: map[string]*schemaResult{}}
	l.load(f.Body)
	t.valid = !l.diags.HasErrors()
	return t, l.diags
}

// lineLen is the length of the line around offset i.
func lineLen(src []byte, i int) int {
	start, end := i, i
	for start > 0 && src[start-1] != '\n' {
		start--
	}
	for end < len(src) && src[end] != '\n' {
		end++
	}
	return end - start
}

// readLimited reads at most max bytes of path: enough to tell that a file
// is over MaxFileSize without reading all of it.
func readLimited(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, max))
}

// WriteDiagnostics prints diagnostics with file, line, column and the
// source snippet. width 0 means no wrapping.
func (t *Topology) WriteDiagnostics(w io.Writer, diags hcl.Diagnostics, width uint, color bool) error {
	files := map[string]*hcl.File{}
	if t != nil {
		files = t.files
	}
	return hcl.NewDiagnosticTextWriter(w, files, width, color).WriteDiagnostics(diags)
}

type loader struct {
	avail   map[string]InstalledPlugin
	t       *Topology
	opts    LoadOptions
	dir     string
	diags   hcl.Diagnostics
	ctx     *hcl.EvalContext
	schemas map[string]*schemaResult

	// Expressions decoded in the second pass, once every block is known.
	pendingConns  []pendingConn
	pendingRelays []pendingRoute
	pendingInlets []pendingRoute
	relayRefs     []*Ref
	settings      []blockSettings
}

type pendingConn struct {
	node      *Node
	conn      *Connection
	expr      hcl.Expression
	pluginSet bool
	pluginRng hcl.Range
}

type pendingRoute struct {
	node *Node
	expr hcl.Expression
	set  func(Route)
}

func (l *loader) errorf(rng *hcl.Range, summary, format string, args ...any) {
	l.diags = append(l.diags, &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  summary,
		Detail:   fmt.Sprintf(format, args...),
		Subject:  rng,
	})
}

func rp(r hcl.Range) *hcl.Range { return &r }

// requiredHints complete hcl's "Missing required argument" diagnostics
// with an example of what to write.
var requiredHints = map[string]string{
	"connection.to": `Add to = node.NAME.transport.NAME (another node's listener) or to = "127.0.0.1:7000".`,
	"relay.at":      `Add at = the route to the relay node, such as node.THIS.connection.NAME or node.NAME.transport.NAME.`,
	"inlet.listen":  `Add listen = "127.0.0.1:6000", the local address TCP clients connect to.`,
	"inlet.to":      `Add to = the route to an outlet, such as [node.THIS.connection.NAME, "/service/outlet"].`,
	"outlet.to":     `Add to = "127.0.0.1:9000", the TCP server each portal session dials.`,
}

// content decodes a block body and makes hcl's generic diagnostics say
// what to write.
func (l *loader) content(body hcl.Body, schema *hcl.BodySchema, blockType string) *hcl.BodyContent {
	c, d := body.Content(schema)
	for _, diag := range d {
		switch {
		case diag.Summary == "Missing required argument":
			for _, a := range schema.Attributes {
				if hint, ok := requiredHints[blockType+"."+a.Name]; ok && strings.Contains(diag.Detail, fmt.Sprintf("%q", a.Name)) {
					diag.Detail += " " + hint
				}
			}
		case strings.HasPrefix(diag.Summary, "Missing name for "), strings.HasPrefix(diag.Summary, "Extraneous label for "):
			for _, bs := range schema.Blocks {
				if strings.HasSuffix(diag.Summary, " "+bs.Type) {
					diag.Detail += fmt.Sprintf(` Write %s "%s" { ... }.`, bs.Type, strings.ToUpper(bs.LabelNames[0]))
				}
			}
		}
	}
	l.diags = append(l.diags, d...)
	return c
}

var rootSchema = &hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{
	{Type: "variable", LabelNames: []string{"name"}},
	{Type: "plugin", LabelNames: []string{"name"}},
	{Type: "node", LabelNames: []string{"name"}},
}}

func (l *loader) load(body hcl.Body) {
	content := l.content(body, rootSchema, "")
	var vars, plugins, nodes []*hcl.Block
	for _, b := range content.Blocks {
		switch b.Type {
		case "variable":
			vars = append(vars, b)
		case "plugin":
			plugins = append(plugins, b)
		case "node":
			nodes = append(nodes, b)
		}
	}
	l.loadVariables(vars)
	for _, b := range plugins {
		l.loadPlugin(b)
	}
	for _, b := range nodes {
		l.loadNode(b)
	}
	// Second pass: references, now that every block is known. Connections
	// first (a relay's host is found through them), then relays, then
	// inlets and references to relays.
	for _, p := range l.pendingConns {
		l.resolveConnection(p)
	}
	for _, p := range l.pendingRelays {
		if r, ok := l.decodeRoute(p.node, p.expr); ok {
			p.set(r)
		}
	}
	for _, p := range l.pendingInlets {
		if r, ok := l.decodeRoute(p.node, p.expr); ok {
			p.set(r)
		}
	}
	l.checkRelayRefs()
	l.checkSettings()
	if !l.diags.HasErrors() {
		l.order()
	}
}

// ---- variables ----

var variableSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "default"}, {Name: "type"}, {Name: "description"},
}}

func (l *loader) loadVariables(blocks []*hcl.Block) {
	seen := map[string]*Variable{}
	for _, b := range blocks {
		name := b.Labels[0]
		content := l.content(b.Body, variableSchema, "variable")
		if !hclsyntax.ValidIdentifier(name) {
			l.errorf(rp(b.LabelRanges[0]), "Invalid variable name",
				"%q cannot be used in var.NAME references; use letters, digits, '-' and '_', starting with a letter.", name)
			continue
		}
		if prev, ok := seen[name]; ok {
			l.errorf(rp(b.LabelRanges[0]), "Duplicate variable",
				"variable %q is already declared at %s; give each variable its own name.", name, prev.Range.String())
			continue
		}
		v := &Variable{Name: name, Type: cty.DynamicPseudoType, Value: cty.NilVal, Range: b.DefRange}
		seen[name] = v
		if a, ok := content.Attributes["type"]; ok {
			ty, d := typeexpr.TypeConstraint(a.Expr)
			l.diags = append(l.diags, d...)
			if !d.HasErrors() {
				v.Type = ty
			}
		}
		if a, ok := content.Attributes["description"]; ok {
			val, d := a.Expr.Value(nil)
			l.diags = append(l.diags, d...)
			if !d.HasErrors() && val.Type() == cty.String && val.IsKnown() && !val.IsNull() {
				v.Description = val.AsString()
			}
		}
		if a, ok := content.Attributes["default"]; ok {
			if len(a.Expr.Variables()) > 0 {
				l.errorf(rp(a.Expr.Range()), "Variable default refers to other values",
					"a variable's default must be a constant such as 7000 or \"127.0.0.1\"; it cannot use var.* or node.* references.")
			} else {
				val, d := a.Expr.Value(nil)
				l.diags = append(l.diags, d...)
				if !d.HasErrors() {
					if cv, err := convert.Convert(val, v.Type); err != nil {
						l.errorf(rp(a.Expr.Range()), "Invalid variable default",
							"the default of variable %q does not match its type %s: %v.", name, typeexpr.TypeString(v.Type), err)
					} else {
						v.Value = cv
					}
				}
			}
		}
		l.t.Variables = append(l.t.Variables, v)
	}
	// Overrides, in a stable order so diagnostics are too.
	keys := make([]string, 0, len(l.opts.Vars))
	for k := range l.opts.Vars {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	for _, k := range keys {
		v, ok := seen[k]
		if !ok {
			l.errorf(nil, "Undeclared variable",
				"--var %s=... sets a variable the file does not declare.%s Declared variables: %s.", k, didYouMean(k, names), quotedList(names))
			continue
		}
		val, err := parseVarValue(l.opts.Vars[k], v.Type)
		if err != nil {
			l.errorf(nil, "Invalid value for variable",
				"--var %s=%s: %v (variable %q declared at %s).", k, l.opts.Vars[k], err, k, v.Range.String())
			continue
		}
		v.Value = val
	}
	vals := map[string]cty.Value{}
	for _, v := range l.t.Variables {
		if v.Value == cty.NilVal {
			l.errorf(rp(v.Range), "Variable has no value",
				"variable %q has no default; add default = ... to the block or pass --var %s=VALUE.", v.Name, v.Name)
			vals[v.Name] = cty.DynamicVal
			continue
		}
		vals[v.Name] = v.Value
	}
	l.ctx = &hcl.EvalContext{Variables: map[string]cty.Value{"var": cty.ObjectVal(vals)}}
}

// parseVarValue converts a --var value: literally for strings, as an HCL
// literal otherwise.
func parseVarValue(s string, ty cty.Type) (cty.Value, error) {
	if ty == cty.String || ty == cty.DynamicPseudoType {
		return cty.StringVal(s), nil
	}
	expr, d := hclsyntax.ParseExpression([]byte(s), "--var", hcl.InitialPos)
	if d.HasErrors() {
		return cty.NilVal, fmt.Errorf("not a valid %s literal", typeexpr.TypeString(ty))
	}
	val, d := expr.Value(nil)
	if d.HasErrors() {
		return cty.NilVal, fmt.Errorf("not a constant %s", typeexpr.TypeString(ty))
	}
	cv, err := convert.Convert(val, ty)
	if err != nil {
		return cty.NilVal, fmt.Errorf("want a %s: %v", typeexpr.TypeString(ty), err)
	}
	return cv, nil
}

// ---- plugins ----

var pluginSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "path"}, {Name: "sha256"}, {Name: "address_type"},
}}

func (l *loader) loadPlugin(b *hcl.Block) {
	name := b.Labels[0]
	content := l.content(b.Body, pluginSchema, "plugin")
	if _, err := routing.ParseRoute("/" + name + "/x"); err != nil || strings.Contains(name, "/") {
		l.errorf(rp(b.LabelRanges[0]), "Invalid plugin name",
			"plugin names are short lower-case names such as \"tcp\" or \"my-transport\" (a-z first, then a-z, 0-9, '-' and '_').")
		return
	}
	if prev, ok := l.t.plugins[name]; ok {
		l.errorf(rp(b.LabelRanges[0]), "Duplicate plugin",
			"plugin %q is already declared at %s; merge the two blocks.", name, prev.Range.String())
		return
	}
	inst, installed := l.available()[name]
	p := &Plugin{Name: name, AddressType: name, Kind: inst.Kind, Range: b.DefRange}
	_, p.Builtin = builtinPlugins[name]
	if installed && inst.AddressType != "" {
		p.AddressType = inst.AddressType
	}
	if a, ok := content.Attributes["path"]; ok {
		if s, ok := l.evalString(a, `"./bin/plugins/my-transport"`); ok {
			if s == "" {
				l.errorf(rp(a.Expr.Range()), "Empty plugin path", "remove path to find %q in the plugin directory, or give the binary's path.", name)
			} else {
				if !filepath.IsAbs(s) {
					s = filepath.Join(l.dir, s)
				}
				if abs, err := filepath.Abs(s); err == nil {
					s = abs
				}
				p.Path = s
			}
		}
	}
	if a, ok := content.Attributes["sha256"]; ok {
		if s, ok := l.evalString(a, `"e3b0c442...b855" (64 hex digits)`); ok {
			s = strings.ToLower(s)
			if !isHex(s, 64) {
				l.errorf(rp(a.Expr.Range()), "Invalid SHA-256 pin",
					"sha256 must be 64 hexadecimal digits, as printed by `sha256sum` or `ferry plugin list`; this is %d characters.", len(s))
			} else {
				p.SHA256 = s
			}
		}
	}
	if a, ok := content.Attributes["address_type"]; ok {
		if s, ok := l.evalString(a, `"mytransport"`); ok {
			if _, err := routing.ParseRoute("/" + s + "/x"); err != nil || strings.Contains(s, "/") || s == "node" {
				l.errorf(rp(a.Expr.Range()), "Invalid address type",
					"address_type is the first part of route hops such as /tcp/127.0.0.1:4000: a short lower-case name, not \"service\", \"worker\" or \"node\".")
			} else {
				p.AddressType = s
			}
		}
	}
	l.t.plugins[name] = p
	l.t.Plugins = append(l.t.Plugins, p)
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// available returns the plugins a topology may use without a plugin
// block: those installed, or Ferry's own when that is not known.
func (l *loader) available() map[string]InstalledPlugin {
	if l.avail != nil {
		return l.avail
	}
	l.avail = map[string]InstalledPlugin{}
	if l.opts.Installed == nil {
		for n, k := range builtinPlugins {
			l.avail[n] = InstalledPlugin{Kind: k}
		}
		return l.avail
	}
	for n, p := range l.opts.Installed {
		if p.Kind == "" {
			p.Kind = builtinPlugins[n]
		}
		l.avail[n] = p
	}
	return l.avail
}

// knownPlugins lists declared and available plugin names.
func (l *loader) knownPlugins() []string {
	var out []string
	for n := range l.available() {
		out = append(out, n)
	}
	for n := range l.t.plugins {
		if _, ok := l.available()[n]; !ok {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// addressTypes maps each route address type a plugin serves to the plugin:
// declared plugins' address_type, installed ones' (their name unless known).
func (l *loader) addressTypes() map[string]string {
	out := map[string]string{}
	for n, p := range l.available() {
		if p.Kind == "portal" {
			continue
		}
		t := p.AddressType
		if t == "" {
			t = n
		}
		out[t] = n
	}
	for _, p := range l.t.Plugins {
		if p.Kind != "portal" {
			out[p.AddressType] = p.Name
		}
	}
	return out
}

// checkPlugin reports an unknown plugin or one of the wrong kind.
func (l *loader) checkPlugin(name string, rng hcl.Range, kind, block string) bool {
	p, declared := l.t.plugins[name]
	inst, installed := l.available()[name]
	if !declared && !installed {
		where := "a built-in plugin"
		if l.opts.Installed != nil {
			where = "a plugin installed in the plugin directory"
		}
		l.errorf(rp(rng), "Unknown plugin",
			"no plugin named %q.%s Use %s (%s) or declare a third-party one with a plugin %q { path = \"...\" } block.",
			name, didYouMean(name, l.knownPlugins()), where, quotedList(l.availableNames()), name)
		return false
	}
	builtinKind := inst.Kind
	k := builtinKind
	if declared && p.Kind != "" {
		k = p.Kind
	}
	if k != "" && k != kind {
		other := "transport and connection"
		if k == "portal" {
			other = "inlet and outlet"
		}
		l.errorf(rp(rng), "Wrong kind of plugin",
			"%q is a %s plugin, so it cannot serve %s block; use it in %s blocks, and use %s here.",
			name, k, article(block), other, defaultFor(kind))
		return false
	}
	return true
}

func article(word string) string {
	if strings.ContainsRune("aeiou", rune(word[0])) {
		return "an " + word
	}
	return "a " + word
}

func defaultFor(kind string) string {
	if kind == "portal" {
		return fmt.Sprintf("%q", DefaultPortalPlugin)
	}
	return `a transport such as "tcp"`
}

func (l *loader) availableNames() []string {
	out := make([]string, 0, len(l.available()))
	for n := range l.available() {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// ---- nodes ----

var nodeSchema = &hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{
	{Type: "transport", LabelNames: []string{"name"}},
	{Type: "connection", LabelNames: []string{"name"}},
	{Type: "service", LabelNames: []string{"type"}},
	{Type: "relay", LabelNames: []string{"name"}},
	{Type: "inlet", LabelNames: []string{"name"}},
	{Type: "outlet", LabelNames: []string{"name"}},
}}

var (
	listenerSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
		{Name: "plugin"}, {Name: "listen"}, {Name: "allow"}, {Name: "settings"},
	}}
	connectionSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
		{Name: "plugin"}, {Name: "to", Required: true}, {Name: "allow"}, {Name: "settings"},
	}}
	serviceSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "address"}, {Name: "max_registrations"}}}
	relaySchema   = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "at", Required: true}, {Name: "secure"}}}
	inletSchema   = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
		{Name: "plugin"}, {Name: "listen", Required: true}, {Name: "to", Required: true}, {Name: "settings"}, {Name: "secure"}, {Name: "max_sessions"},
	}}
	outletSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
		{Name: "plugin"}, {Name: "from"}, {Name: "to", Required: true}, {Name: "settings"}, {Name: "secure"}, {Name: "max_sessions"},
	}}
)

// checkName reports a label that cannot appear in a node.N.KIND.NAME
// reference.
func (l *loader) checkName(b *hcl.Block, what string) bool {
	name := b.Labels[0]
	if !hclsyntax.ValidIdentifier(name) {
		l.errorf(rp(b.LabelRanges[0]), "Invalid "+what+" name",
			"%q cannot be used in references such as node.n1.%s.NAME; use letters, digits, '-' and '_', starting with a letter.", name, b.Type)
		return false
	}
	return true
}

func (l *loader) loadNode(b *hcl.Block) {
	name := b.Labels[0]
	if !l.checkName(b, "node") {
		return
	}
	if prev, ok := l.t.byName[name]; ok {
		l.errorf(rp(b.LabelRanges[0]), "Duplicate node name",
			"node %q is already declared at %s; give each node its own name.", name, prev.Range.String())
		return
	}
	n := &Node{Name: name, Range: b.DefRange}
	l.t.byName[name] = n
	l.t.Nodes = append(l.t.Nodes, n)
	content := l.content(b.Body, nodeSchema, "node")

	seen := map[string]hcl.Range{} // "kind name" -> where
	dup := func(b *hcl.Block, key string) bool {
		if prev, ok := seen[key]; ok {
			l.errorf(rp(b.LabelRanges[0]), "Duplicate "+b.Type,
				"node %q already has a %s %q at %s; give each one its own name.", name, b.Type, b.Labels[0], prev.String())
			return true
		}
		seen[key] = b.DefRange
		return false
	}
	localAddrs := map[string]hcl.Range{}
	claim := func(addr string, rng hcl.Range) {
		if prev, ok := localAddrs[addr]; ok {
			l.errorf(rp(rng), "Duplicate local address",
				"address %q on node %q is already used at %s; give this one another address.", addr, name, prev.String())
			return
		}
		localAddrs[addr] = rng
	}
	var defaultAllow []*[]string
	for _, blk := range content.Blocks {
		if blk.Type != "service" && !l.checkName(blk, blk.Type) {
			continue
		}
		// Services are told apart by address (two echo services may run
		// at different addresses), checked by claim below.
		if blk.Type != "service" && dup(blk, blk.Type+" "+blk.Labels[0]) {
			continue
		}
		switch blk.Type {
		case "transport":
			if ls := l.loadListener(n, blk); ls != nil {
				n.Listeners = append(n.Listeners, ls)
				if ls.Allow == nil {
					defaultAllow = append(defaultAllow, &ls.Allow)
				}
			}
		case "connection":
			if c := l.loadConnection(n, blk); c != nil {
				n.Connections = append(n.Connections, c)
				if c.Allow == nil {
					defaultAllow = append(defaultAllow, &c.Allow)
				}
			}
		case "service":
			if s := l.loadService(blk); s != nil {
				n.Services = append(n.Services, s)
				claim(s.Address, s.Range)
			}
		case "relay":
			if r := l.loadRelay(n, blk); r != nil {
				n.Relays = append(n.Relays, r)
			}
		case "inlet":
			if in := l.loadInlet(n, blk); in != nil {
				n.Inlets = append(n.Inlets, in)
			}
		case "outlet":
			if o := l.loadOutlet(n, blk); o != nil {
				n.Outlets = append(n.Outlets, o)
				claim(o.Address, o.Range)
			}
		}
	}
	// Network input reaches, by default, what the node declares it serves.
	var serves []string
	for _, s := range n.Services {
		serves = append(serves, s.Address)
	}
	for _, o := range n.Outlets {
		serves = append(serves, o.Address)
	}
	for _, p := range defaultAllow {
		*p = append([]string{}, serves...)
	}
	// An explicit allow entry that nothing in the file serves is usually a
	// typo; it may also be a service started later with the ferry command,
	// so this is a warning.
	check := func(allow []string, rng *hcl.Range) {
		for _, a := range allow {
			if rng == nil || contains(serves, a) || strings.HasPrefix(a, "forward_to_") {
				continue
			}
			l.diags = append(l.diags, &hcl.Diagnostic{
				Severity: hcl.DiagWarning,
				Summary:  "Allowed address not served",
				Detail: fmt.Sprintf("allow lists %q, but node %q declares no service or outlet at that address.%s Network input to it finds nothing until one is started (ferry service start ... --at %s).",
					a, name, didYouMean(a, serves), name),
				Subject: rng,
			})
		}
	}
	for _, ls := range n.Listeners {
		check(ls.Allow, ls.allowRng)
	}
	for _, c := range n.Connections {
		check(c.Allow, c.allowRng)
	}
}

func (l *loader) pluginAttr(content *hcl.BodyContent, def, kind, block string) (string, hcl.Range, bool, bool) {
	a, ok := content.Attributes["plugin"]
	if !ok {
		return def, hcl.Range{}, false, true
	}
	s, ok := l.evalString(a, `"tcp"`)
	if !ok {
		return "", a.Expr.Range(), true, false
	}
	if !l.checkPlugin(s, a.Expr.Range(), kind, block) {
		return "", a.Expr.Range(), true, false
	}
	return s, a.Expr.Range(), true, true
}

func (l *loader) loadListener(n *Node, b *hcl.Block) *Listener {
	content := l.content(b.Body, listenerSchema, "transport")
	ls := &Listener{Name: b.Labels[0], Address: DefaultListenAddress, Range: b.DefRange}
	var ok bool
	if ls.Plugin, _, _, ok = l.pluginAttr(content, DefaultTransportPlugin, "transport", "transport"); !ok {
		return nil
	}
	if a, ok := content.Attributes["listen"]; ok {
		s, ok := l.evalString(a, `"127.0.0.1:7000"`)
		if !ok || !l.checkHostPort(ls.Plugin, s, a.Expr.Range(), "listen", true) {
			return nil
		}
		ls.Address = s
	}
	if a, ok := content.Attributes["allow"]; ok {
		if ls.Allow, ok = l.evalAllow(a); !ok {
			return nil
		}
		ls.allowRng = rp(a.Expr.Range())
	}
	if a, ok := content.Attributes["settings"]; ok {
		l.collectSettings(n, ls.Plugin, b, a, func(m map[string]string) { ls.Settings = m })
	} else {
		l.settings = append(l.settings, blockSettings{node: n, plugin: ls.Plugin, block: b.DefRange})
	}
	return ls
}

func (l *loader) loadConnection(n *Node, b *hcl.Block) *Connection {
	content := l.content(b.Body, connectionSchema, "connection")
	c := &Connection{Name: b.Labels[0], Range: b.DefRange}
	plugin, pluginRng, pluginSet, ok := l.pluginAttr(content, DefaultTransportPlugin, "transport", "connection")
	if !ok {
		return nil
	}
	c.Plugin = plugin
	if a, ok := content.Attributes["allow"]; ok {
		if c.Allow, ok = l.evalAllow(a); !ok {
			return nil
		}
		c.allowRng = rp(a.Expr.Range())
	}
	a, ok := content.Attributes["to"]
	if !ok {
		return nil // hcl reported the missing attribute
	}
	l.pendingConns = append(l.pendingConns, pendingConn{node: n, conn: c, expr: a.Expr, pluginSet: pluginSet, pluginRng: pluginRng})
	if a, ok := content.Attributes["settings"]; ok {
		// The plugin may still change (inherited from the listener it
		// dials), so settings are bound to it lazily.
		l.collectSettings(n, "", b, a, func(m map[string]string) { c.Settings = m })
		l.settings[len(l.settings)-1].pluginOf = func() string { return c.Plugin }
	} else {
		l.settings = append(l.settings, blockSettings{node: n, block: b.DefRange, pluginOf: func() string { return c.Plugin }})
	}
	return c
}

func (l *loader) resolveConnection(p pendingConn) {
	c := p.conn
	if trav, d := hcl.AbsTraversalForExpr(p.expr); !d.HasErrors() && trav.RootName() == "node" {
		ref := l.decodeRef(p.node, trav, p.expr.Range())
		if ref == nil {
			return
		}
		if ref.Kind != RefListener {
			l.errorf(rp(ref.Range), "Connection must name a listener",
				"a connection dials a listener: write to = node.%s.transport.NAME, or a literal address such as \"127.0.0.1:7000\".", ref.Node)
			return
		}
		if ref.Node == p.node.Name {
			l.errorf(rp(ref.Range), "Connection to the node itself",
				"node %q would connect to its own listener; a node reaches its own services without a transport, so remove this connection.", ref.Node)
			return
		}
		target := l.listener(ref)
		if p.pluginSet && c.Plugin != target.Plugin {
			l.errorf(rp(p.pluginRng), "Plugin does not match the listener",
				"%s listens with plugin %q, so this connection must use %q too (or leave plugin out to inherit it).", ref, target.Plugin, target.Plugin)
			return
		}
		c.Plugin = target.Plugin
		c.To = Target{Ref: ref}
		p.node.deps = append(p.node.deps, ref)
		return
	}
	if !l.checkRefs(p.expr, "to", false) {
		return
	}
	s, ok := l.evalStringExpr(p.expr, "to", `"127.0.0.1:7000" or node.n2.transport.public`)
	if !ok || !l.checkHostPort(c.Plugin, s, p.expr.Range(), "to", false) {
		return
	}
	c.To = Target{Address: s}
}

func (l *loader) listener(r *Ref) *Listener {
	for _, ls := range l.t.byName[r.Node].Listeners {
		if ls.Name == r.Name {
			return ls
		}
	}
	return nil
}

func (l *loader) loadService(b *hcl.Block) *Service {
	typ := b.Labels[0]
	content := l.content(b.Body, serviceSchema, "service")
	if types := serviceTypes(); !contains(types, typ) {
		l.errorf(rp(b.LabelRanges[0]), "Unknown service type",
			"there is no built-in service %q.%s Services are %s; give a service another address with address = \"...\".",
			typ, didYouMean(typ, types), quotedList(types))
		return nil
	}
	s := &Service{Type: typ, Address: typ, Range: b.DefRange}
	if a, ok := content.Attributes["address"]; ok {
		str, ok := l.evalString(a, `"echo2"`)
		if !ok {
			return nil
		}
		addr, ok := l.localAddress(str, a.Expr.Range(), "address")
		if !ok {
			return nil
		}
		s.Address = addr
	}
	if a, ok := content.Attributes["max_registrations"]; ok {
		if typ != "relay" {
			l.errorf(rp(a.NameRange), "Unsupported argument",
				"max_registrations applies to the relay service only, not to service %q.", typ)
		} else {
			// A bad value is reported; the service is kept so that nothing
			// referring to it reports a cascade of errors.
			s.MaxRegistrations, _ = l.evalCap(a, state.MaxRegistrationsLimit)
		}
	}
	return s
}

// localAddress accepts "name" or "/service/name" and returns "name".
func (l *loader) localAddress(s string, rng hcl.Range, attr string) (string, bool) {
	text := s
	if !strings.HasPrefix(s, "/") {
		text = "/service/" + s
	}
	a, err := routing.ParseAddress(text)
	if err != nil || !a.IsLocal() {
		l.errorf(rp(rng), "Invalid local address",
			"%s must be a local worker address such as \"echo\" or \"/service/echo\"; %q is not one.", attr, s)
		return "", false
	}
	return a.Value, true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (l *loader) loadRelay(n *Node, b *hcl.Block) *Relay {
	content := l.content(b.Body, relaySchema, "relay")
	r := &Relay{Name: b.Labels[0], Node: n.Name, Range: b.DefRange}
	if prev, ok := l.t.relays[r.Name]; ok {
		l.errorf(rp(b.LabelRanges[0]), "Duplicate relay name",
			"relay %q is already declared by node %q at %s; relay names become forward_to_NAME addresses, so each must be unique in the file.",
			r.Name, prev.Node, prev.Range.String())
		return nil
	}
	l.t.relays[r.Name] = r
	if a, ok := content.Attributes["secure"]; ok {
		if r.Secure, ok = l.evalBool(a); !ok {
			return nil
		}
	}
	if a, ok := content.Attributes["at"]; ok {
		l.pendingRelays = append(l.pendingRelays, pendingRoute{node: n, expr: a.Expr, set: func(rt Route) {
			r.At = rt
			r.Host = l.relayHost(n, rt)
		}})
	}
	return r
}

// relayHost names the node a one-element route leads to, or "".
func (l *loader) relayHost(n *Node, rt Route) string {
	if len(rt) != 1 || rt[0].Ref == nil {
		return ""
	}
	ref := rt[0].Ref
	switch ref.Kind {
	case RefListener:
		return ref.Node
	case RefConnection:
		for _, c := range l.t.byName[ref.Node].Connections {
			if c.Name == ref.Name && c.To.Ref != nil {
				return c.To.Ref.Node
			}
		}
	}
	return ""
}

func (l *loader) loadInlet(n *Node, b *hcl.Block) *Inlet {
	content := l.content(b.Body, inletSchema, "inlet")
	in := &Inlet{Name: b.Labels[0], Range: b.DefRange}
	var ok bool
	if in.Plugin, _, _, ok = l.pluginAttr(content, DefaultPortalPlugin, "portal", "inlet"); !ok {
		return nil
	}
	if a, ok := content.Attributes["listen"]; ok {
		s, ok := l.evalString(a, `"127.0.0.1:6000"`)
		if !ok || !l.checkHostPort(in.Plugin, s, a.Expr.Range(), "listen", true) {
			return nil
		}
		in.Listen = s
	}
	if a, ok := content.Attributes["secure"]; ok {
		if in.Secure, ok = l.evalBool(a); !ok {
			return nil
		}
	}
	if a, ok := content.Attributes["max_sessions"]; ok {
		in.MaxSessions, _ = l.evalCap(a, state.MaxSessionsLimit) // reported; no cascade
	}
	if a, ok := content.Attributes["to"]; ok {
		l.pendingInlets = append(l.pendingInlets, pendingRoute{node: n, expr: a.Expr, set: func(rt Route) { in.To = rt }})
	}
	l.blockSettings(n, in.Plugin, b, content, func(m map[string]string) { in.Settings = m })
	return in
}

func (l *loader) loadOutlet(n *Node, b *hcl.Block) *Outlet {
	content := l.content(b.Body, outletSchema, "outlet")
	o := &Outlet{Name: b.Labels[0], Address: DefaultOutletAddress, Range: b.DefRange}
	var ok bool
	if o.Plugin, _, _, ok = l.pluginAttr(content, DefaultPortalPlugin, "portal", "outlet"); !ok {
		return nil
	}
	if a, ok := content.Attributes["from"]; ok {
		s, ok := l.evalString(a, `"/service/outlet"`)
		if !ok {
			return nil
		}
		if o.Address, ok = l.localAddress(s, a.Expr.Range(), "from"); !ok {
			return nil
		}
	}
	if a, ok := content.Attributes["to"]; ok {
		s, ok := l.evalString(a, `"127.0.0.1:9000"`)
		if !ok || !l.checkHostPort(o.Plugin, s, a.Expr.Range(), "to", false) {
			return nil
		}
		o.Target = s
	}
	if a, ok := content.Attributes["secure"]; ok {
		if o.Secure, ok = l.evalBool(a); !ok {
			return nil
		}
	}
	if a, ok := content.Attributes["max_sessions"]; ok {
		o.MaxSessions, _ = l.evalCap(a, state.MaxSessionsLimit) // reported; no cascade
	}
	l.blockSettings(n, o.Plugin, b, content, func(m map[string]string) { o.Settings = m })
	return o
}

func (l *loader) blockSettings(n *Node, plugin string, b *hcl.Block, content *hcl.BodyContent, set func(map[string]string)) {
	if a, ok := content.Attributes["settings"]; ok {
		l.collectSettings(n, plugin, b, a, set)
		return
	}
	l.settings = append(l.settings, blockSettings{node: n, plugin: plugin, block: b.DefRange})
}

// checkHostPort checks host:port addresses of plugins that use them.
func (l *loader) checkHostPort(plugin, s string, rng hcl.Range, attr string, listen bool) bool {
	if !hostPortPlugins[plugin] {
		if s == "" {
			l.errorf(rp(rng), "Empty address", "%s must not be empty; give the address in plugin %q's syntax.", attr, plugin)
			return false
		}
		return true
	}
	example := `"127.0.0.1:7000"`
	if listen {
		example += " (port 0 picks a free port)"
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		l.errorf(rp(rng), "Invalid address",
			"%s must be host:port, such as %s; %q is not: %v.", attr, example, s, unwrapAddrErr(err))
		return false
	}
	pn, err := strconv.ParseUint(port, 10, 16)
	if err != nil || (!listen && pn == 0) {
		want := "a number from 1 to 65535"
		if listen {
			want = "a number from 0 to 65535"
		}
		l.errorf(rp(rng), "Invalid port", "the port in %s = %q must be %s, as in %s.", attr, s, want, example)
		return false
	}
	if host == "" && !listen {
		l.errorf(rp(rng), "Missing host", "%s = %q names no host; write the host to dial, as in %s.", attr, s, example)
		return false
	}
	return true
}

func unwrapAddrErr(err error) string {
	var ae *net.AddrError
	if errors.As(err, &ae) {
		return ae.Err
	}
	return err.Error()
}

// ---- expressions ----

// checkRefs reports references other than var.NAME (and, where allowed,
// node.* references which the caller decodes itself).
func (l *loader) checkRefs(expr hcl.Expression, attr string, allowNode bool) bool {
	ok := true
	for _, trav := range expr.Variables() {
		root := trav.RootName()
		switch root {
		case "var":
			if len(trav) < 2 {
				l.errorf(rp(trav.SourceRange()), "Incomplete variable reference", "write var.NAME to use a variable.")
				ok = false
				continue
			}
			ga, isAttr := trav[1].(hcl.TraverseAttr)
			if !isAttr {
				l.errorf(rp(trav.SourceRange()), "Invalid variable reference", "write var.NAME to use a variable.")
				ok = false
				continue
			}
			names := make([]string, len(l.t.Variables))
			found := false
			for i, v := range l.t.Variables {
				names[i] = v.Name
				found = found || v.Name == ga.Name
			}
			if !found {
				l.errorf(rp(trav[1].SourceRange()), "Undeclared variable",
					"no variable %q is declared.%s Declare it with a variable %q { default = ... } block.", ga.Name, didYouMean(ga.Name, names), ga.Name)
				ok = false
			}
		case "node":
			if !allowNode {
				l.errorf(rp(trav.SourceRange()), "Reference not allowed here",
					"%s cannot refer to other blocks; only a connection's to, a relay's at and an inlet's to can. Write the value as a string.", attr)
				ok = false
			}
		default:
			l.errorf(rp(trav.SourceRange()), "Unknown reference",
				"%q is neither var.NAME nor node.NAME.KIND.NAME.%s", root, didYouMean(root, []string{"var", "node"}))
			ok = false
		}
	}
	return ok
}

func (l *loader) evalString(a *hcl.Attribute, example string) (string, bool) {
	if !l.checkRefs(a.Expr, a.Name, false) {
		return "", false
	}
	return l.evalStringExpr(a.Expr, a.Name, example)
}

func (l *loader) evalStringExpr(expr hcl.Expression, attr, example string) (string, bool) {
	val, d := expr.Value(l.ctx)
	l.diags = append(l.diags, d...)
	if d.HasErrors() {
		return "", false
	}
	if !val.IsKnown() {
		// Only a variable without a value makes one; it was reported.
		return "", false
	}
	if val.IsNull() || val.Type() != cty.String {
		l.errorf(rp(expr.Range()), "Incorrect attribute value type",
			"%s must be a string such as %s; this is %s.", attr, example, describe(val))
		return "", false
	}
	return val.AsString(), true
}

// evalCap evaluates a cap such as max_sessions: a whole number from 1 to
// limit.
func (l *loader) evalCap(a *hcl.Attribute, limit int) (int, bool) {
	if !l.checkRefs(a.Expr, a.Name, false) {
		return 0, false
	}
	val, d := a.Expr.Value(l.ctx)
	l.diags = append(l.diags, d...)
	if d.HasErrors() || !val.IsKnown() {
		return 0, false
	}
	if val.IsNull() || val.Type() != cty.Number {
		l.errorf(rp(a.Expr.Range()), "Incorrect attribute value type",
			"%s must be a whole number from 1 to %d; this is %s.", a.Name, limit, describe(val))
		return 0, false
	}
	n, acc := val.AsBigFloat().Int64()
	if acc != big.Exact || n < 1 || n > int64(limit) {
		l.errorf(rp(a.Expr.Range()), "Invalid "+a.Name,
			"%s must be a whole number from 1 to %d; this is %s.", a.Name, limit, val.AsBigFloat().Text('g', -1))
		return 0, false
	}
	return int(n), true
}

// evalBool evaluates a true/false attribute such as secure.
func (l *loader) evalBool(a *hcl.Attribute) (bool, bool) {
	if !l.checkRefs(a.Expr, a.Name, false) {
		return false, false
	}
	val, d := a.Expr.Value(l.ctx)
	l.diags = append(l.diags, d...)
	if d.HasErrors() || !val.IsKnown() {
		return false, false
	}
	if val.IsNull() || val.Type() != cty.Bool {
		l.errorf(rp(a.Expr.Range()), "Incorrect attribute value type",
			"%s must be true or false; this is %s.", a.Name, describe(val))
		return false, false
	}
	return val.True(), true
}

func (l *loader) evalAllow(a *hcl.Attribute) ([]string, bool) {
	if !l.checkRefs(a.Expr, a.Name, false) {
		return nil, false
	}
	val, d := a.Expr.Value(l.ctx)
	l.diags = append(l.diags, d...)
	if d.HasErrors() {
		return nil, false
	}
	if !val.IsWhollyKnown() {
		return nil, false // a variable without a value, reported already
	}
	if val.IsNull() || !(val.Type().IsTupleType() || val.Type().IsListType() || val.Type().IsSetType()) {
		l.errorf(rp(a.Expr.Range()), "Incorrect attribute value type",
			"allow must be a list of local addresses such as [\"echo\", \"uppercase\"]; this is %s.", describe(val))
		return nil, false
	}
	out := []string{}
	elems := exprElems(a.Expr)
	i := 0
	for it := val.ElementIterator(); it.Next(); i++ {
		_, ev := it.Element()
		rng := a.Expr.Range()
		if i < len(elems) {
			rng = elems[i].Range()
		}
		if ev.IsNull() || !ev.IsKnown() || ev.Type() != cty.String {
			l.errorf(rp(rng), "Incorrect attribute value type",
				"each entry of allow must be a string such as \"echo\"; this is %s.", describe(ev))
			return nil, false
		}
		addr, ok := l.localAddress(ev.AsString(), rng, "each entry of allow")
		if !ok {
			return nil, false
		}
		out = append(out, addr)
	}
	return out, true
}

// exprElems returns the element expressions of a list literal, or nil.
func exprElems(expr hcl.Expression) []hcl.Expression {
	if t, ok := expr.(*hclsyntax.TupleConsExpr); ok {
		out := make([]hcl.Expression, len(t.Exprs))
		for i, e := range t.Exprs {
			out[i] = e
		}
		return out
	}
	return nil
}

// describe names a value's type for a diagnostic.
func describe(v cty.Value) string {
	switch {
	case v == cty.NilVal || v.IsNull():
		return "null"
	case !v.IsKnown():
		return "an unknown value"
	}
	t := v.Type()
	switch {
	case t == cty.String:
		return fmt.Sprintf("the string %q", v.AsString())
	case t == cty.Number:
		return "the number " + v.AsBigFloat().Text('f', -1)
	case t == cty.Bool:
		return fmt.Sprintf("the bool %v", v.True())
	case t.IsTupleType() || t.IsListType() || t.IsSetType():
		return "a list"
	case t.IsObjectType() || t.IsMapType():
		return "an object"
	}
	return "a " + t.FriendlyName()
}

// ---- routes and references ----

// decodeRoute decodes a route attribute: route text, a reference, or a
// list mixing both.
func (l *loader) decodeRoute(n *Node, expr hcl.Expression) (Route, bool) {
	elems := exprElems(expr)
	if elems == nil {
		elems = []hcl.Expression{expr}
	}
	if len(elems) == 0 {
		l.errorf(rp(expr.Range()), "Empty route",
			"write a route such as \"/service/echo\" or a list such as [node.n1.connection.to_n2, \"/service/echo\"].")
		return nil, false
	}
	var out Route
	ok := true
	for _, e := range elems {
		if trav, d := hcl.AbsTraversalForExpr(e); !d.HasErrors() && trav.RootName() == "node" {
			ref := l.decodeRef(n, trav, e.Range())
			if ref == nil {
				ok = false
				continue
			}
			switch {
			case ref.Kind == RefListener && ref.Node == n.Name:
				l.errorf(rp(ref.Range), "Route through the node's own listener",
					"%s belongs to node %q itself; a route from a node to its own workers needs no transport hop, so remove this element.", ref, n.Name)
				ok = false
				continue
			case ref.Kind == RefRelay:
				l.relayRefs = append(l.relayRefs, ref)
			}
			if ref.Node != n.Name {
				n.deps = append(n.deps, ref)
			}
			out = append(out, RouteElem{Ref: ref})
			continue
		}
		if !l.checkRefs(e, "a route", false) {
			// A node.* reference inside a string template lands here.
			ok = false
			continue
		}
		s, good := l.evalStringExpr(e, "each part of a route", `"/service/echo" or a reference such as node.n2.transport.public`)
		if !good {
			ok = false
			continue
		}
		if !l.checkRouteText(s, e.Range()) {
			ok = false
			continue
		}
		out = append(out, RouteElem{Text: s})
	}
	if !ok {
		return nil, false
	}
	hops := 0
	for _, e := range out {
		if e.Ref != nil {
			hops++
		} else {
			r, _ := routing.ParseRoute(e.Text)
			hops += len(r)
		}
	}
	if hops > routing.MaxHops {
		l.errorf(rp(expr.Range()), "Route too long", "this route has %d hops; the limit is %d.", hops, routing.MaxHops)
		return nil, false
	}
	return out, true
}

func (l *loader) checkRouteText(s string, rng hcl.Range) bool {
	r, err := routing.ParseRoute(s)
	if err != nil {
		var pe *routing.ParseError
		reason := err.Error()
		if errors.As(err, &pe) {
			reason = pe.Reason
			if pe.Segment > 0 {
				reason = fmt.Sprintf("segment %d: %s", pe.Segment, pe.Reason)
			}
		}
		l.errorf(rp(rng), "Invalid route", "%q is not a route: %s. Routes are /KIND/VALUE pairs such as \"/service/echo\" or \"/tcp/127.0.0.1:4000/service/echo\".", truncate(s, 80), reason)
		return false
	}
	types := l.addressTypes()
	for _, a := range r {
		if a.Type == "node" {
			l.errorf(rp(rng), "Node names in route text",
				"/node/%s is resolved by the ferry command, not in topology files; write a reference instead, such as node.%s.transport.NAME or node.THIS.connection.NAME, in a list: [node.%s.transport.NAME, \"/service/echo\"].",
				a.Value, a.Value, a.Value)
			return false
		}
		if a.IsLocal() {
			continue
		}
		plugin, served := types[a.Type]
		if !served {
			var transports []string
			for t := range types {
				transports = append(transports, t)
			}
			sort.Strings(transports)
			l.errorf(rp(rng), "Unknown address type",
				"no installed plugin serves /%s/ addresses, so this route cannot be followed.%s Route hops are /service/NAME, /worker/ID, or /TYPE/ADDRESS with the type of a transport: %s.",
				a.Type, didYouMean(a.Type, append([]string{"service", "worker"}, transports...)), strings.Join(transports, ", "))
			return false
		}
		if hostPortPlugins[plugin] {
			if _, port, err := net.SplitHostPort(a.Value); err != nil || port == "" {
				l.errorf(rp(rng), "Invalid address in route",
					"/%s/ addresses are host:port, such as /%s/127.0.0.1:7000; %q has no port.", a.Type, a.Type, a.Value)
				return false
			} else if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
				l.errorf(rp(rng), "Invalid address in route",
					"/%s/%s: the port must be a number from 1 to 65535.", a.Type, a.Value)
				return false
			}
		}
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

var refKinds = map[string]RefKind{"transport": RefListener, "connection": RefConnection, "relay": RefRelay}

// decodeRef checks a node.N.KIND.NAME traversal.
func (l *loader) decodeRef(from *Node, trav hcl.Traversal, rng hcl.Range) *Ref {
	const form = "write node.NAME.transport.NAME (a listener's address), node.NAME.connection.NAME (a connection's worker) or node.NAME.relay.NAME (a relay's forwarder)"
	parts := make([]string, 0, len(trav))
	for i, step := range trav {
		switch s := step.(type) {
		case hcl.TraverseRoot:
			parts = append(parts, s.Name)
		case hcl.TraverseAttr:
			parts = append(parts, s.Name)
		case hcl.TraverseIndex:
			if s.Key.Type() == cty.String && s.Key.IsKnown() && !s.Key.IsNull() {
				parts = append(parts, s.Key.AsString())
				continue
			}
			l.errorf(rp(trav[i].SourceRange()), "Invalid reference", "%s.", form)
			return nil
		default:
			l.errorf(rp(trav[i].SourceRange()), "Invalid reference", "%s.", form)
			return nil
		}
	}
	if len(parts) != 4 {
		l.errorf(rp(rng), "Invalid reference", "a reference has four parts: %s.", form)
		return nil
	}
	target, ok := l.t.byName[parts[1]]
	if !ok {
		names := make([]string, len(l.t.Nodes))
		for i, n := range l.t.Nodes {
			names[i] = n.Name
		}
		l.errorf(rp(trav[1].SourceRange()), "Reference to undefined node",
			"no node named %q is declared in this file.%s Declared nodes: %s.", parts[1], didYouMean(parts[1], names), quotedList(names))
		return nil
	}
	kind, ok := refKinds[parts[2]]
	if !ok {
		hint := didYouMean(parts[2], []string{"transport", "connection", "relay"})
		if parts[2] == "listener" {
			hint = ` Listeners are declared with transport blocks: write "transport".`
		}
		l.errorf(rp(trav[2].SourceRange()), "Invalid reference", "%q is not a kind of block that can be referenced.%s Then %s.", parts[2], hint, form)
		return nil
	}
	ref := &Ref{Kind: kind, Node: parts[1], Name: parts[3], From: from.Name, Range: rng}
	var names []string
	found := false
	switch kind {
	case RefListener:
		for _, ls := range target.Listeners {
			names = append(names, ls.Name)
			found = found || ls.Name == ref.Name
		}
	case RefConnection:
		for _, c := range target.Connections {
			names = append(names, c.Name)
			found = found || c.Name == ref.Name
		}
	case RefRelay:
		for name := range l.t.relays {
			names = append(names, name)
		}
		_, found = l.t.relays[ref.Name]
	}
	if !found {
		where := fmt.Sprintf("node %q has no %s %q.", ref.Node, parts[2], ref.Name)
		if kind == RefRelay {
			where = fmt.Sprintf("no node declares a relay %q.", ref.Name)
		}
		l.errorf(rp(trav[3].SourceRange()), "Reference to undefined "+parts[2],
			"%s%s Declared: %s.", where, didYouMean(ref.Name, names), quotedList(names))
		return nil
	}
	return ref
}

// checkRelayRefs checks node.N.relay.R against where R is registered.
func (l *loader) checkRelayRefs() {
	for _, ref := range l.relayRefs {
		r := l.t.relays[ref.Name]
		if r.Host != "" && r.Host != ref.Node {
			l.errorf(rp(ref.Range), "Relay is hosted elsewhere",
				"relay %q is registered at node %q (see its at = ... at %s); write node.%s.relay.%s.", ref.Name, r.Host, r.Range.String(), r.Host, ref.Name)
		}
		if r.Host == "" && r.Node == ref.Node {
			l.errorf(rp(ref.Range), "Relay is hosted elsewhere",
				"node.N.relay.%s names the node hosting the forwarder, not %q which registers it; write the relay node's name instead of %q.", ref.Name, r.Node, r.Node)
		}
	}
}

// numberText prints a cty number the way a person wrote it.
func numberText(v cty.Value) string {
	return v.AsBigFloat().Text('f', -1)
}

func isWhole(v cty.Value) bool {
	return v.AsBigFloat().IsInt()
}
