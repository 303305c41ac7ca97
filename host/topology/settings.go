package topology

import (
	"errors"
	"strconv"
	"time"

	"github.com/ferryhq/ferry/sdk/transport"
	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
)

// blockSettings is the settings attribute of one block (or its absence),
// checked once every plugin is known.
type blockSettings struct {
	node     *Node
	plugin   string
	pluginOf func() string // for connections, whose plugin may be inherited
	block    hcl.Range
	values   []settingValue
	set      func(map[string]string)
}

type settingValue struct {
	key            string
	val            cty.Value
	keyRng, valRng hcl.Range
}

type schemaResult struct {
	settings []transport.Setting
	known    bool
	failed   bool
}

func (l *loader) collectSettings(n *Node, plugin string, b *hcl.Block, a *hcl.Attribute, set func(map[string]string)) {
	bs := blockSettings{node: n, plugin: plugin, block: b.DefRange, set: set}
	defer func() { l.settings = append(l.settings, bs) }()
	if !l.checkRefs(a.Expr, "settings", false) {
		return
	}
	pairs, d := hcl.ExprMap(a.Expr)
	if d.HasErrors() {
		// Not an object literal: perhaps a variable holding an object.
		val, d := a.Expr.Value(l.ctx)
		l.diags = append(l.diags, d...)
		if d.HasErrors() {
			return
		}
		if !val.IsWhollyKnown() {
			return // a variable without a value, reported already
		}
		if val.IsNull() || !(val.Type().IsObjectType() || val.Type().IsMapType()) {
			l.errorf(rp(a.Expr.Range()), "Incorrect attribute value type",
				"settings must be an object such as { baud = 9600 }; this is %s.", describe(val))
			return
		}
		for it := val.ElementIterator(); it.Next(); {
			k, v := it.Element()
			bs.values = append(bs.values, settingValue{key: k.AsString(), val: v, keyRng: a.Expr.Range(), valRng: a.Expr.Range()})
		}
		return
	}
	seen := map[string]bool{}
	for _, p := range pairs {
		key := hcl.ExprAsKeyword(p.Key)
		if key == "" {
			kv, d := p.Key.Value(l.ctx)
			if d.HasErrors() || kv.IsNull() || !kv.IsKnown() || kv.Type() != cty.String {
				l.errorf(rp(p.Key.Range()), "Invalid setting name", "setting names are words such as baud; write { baud = 9600 }.")
				continue
			}
			key = kv.AsString()
		}
		if seen[key] {
			l.errorf(rp(p.Key.Range()), "Duplicate setting", "setting %q is given twice in this block; keep one.", key)
			continue
		}
		seen[key] = true
		val, d := p.Value.Value(l.ctx)
		l.diags = append(l.diags, d...)
		if d.HasErrors() {
			continue
		}
		bs.values = append(bs.values, settingValue{key: key, val: val, keyRng: p.Key.Range(), valRng: p.Value.Range()})
	}
}

// schema returns a plugin's settings schema, asking LoadOptions.Schemas
// once per plugin.
func (l *loader) schema(plugin string, user hcl.Range) *schemaResult {
	if r, ok := l.schemas[plugin]; ok {
		return r
	}
	r := &schemaResult{}
	l.schemas[plugin] = r
	if l.opts.Schemas == nil {
		return r
	}
	s, err := l.opts.Schemas(plugin)
	switch {
	case errors.Is(err, ErrSchemaUnknown):
	case err != nil:
		rng := user
		if p, ok := l.t.plugins[plugin]; ok {
			rng = p.Range
		}
		l.errorf(rp(rng), "Cannot read plugin settings schema",
			"plugin %q did not declare its settings: %v. Check that the plugin is installed and runs (ferry plugin list), or fix its plugin block.", plugin, err)
		r.failed = true
	default:
		r.settings, r.known = s, true
	}
	return r
}

func (l *loader) checkSettings() {
	type origin struct {
		value string
		rng   hcl.Range
	}
	merged := map[*Node]map[string]map[string]origin{}
	firstUse := map[*Node]map[string]hcl.Range{}
	for _, bs := range l.settings {
		plugin := bs.plugin
		if bs.pluginOf != nil {
			plugin = bs.pluginOf()
		}
		if plugin == "" {
			continue
		}
		n := bs.node
		if merged[n] == nil {
			merged[n] = map[string]map[string]origin{}
			firstUse[n] = map[string]hcl.Range{}
		}
		if merged[n][plugin] == nil {
			merged[n][plugin] = map[string]origin{}
			firstUse[n][plugin] = bs.block
			n.pluginOrder = append(n.pluginOrder, plugin)
		}
		sr := l.schema(plugin, bs.block)
		own := map[string]string{}
		for _, sv := range bs.values {
			var decl *transport.Setting
			if sr.known {
				for i := range sr.settings {
					if sr.settings[i].Name == sv.key {
						decl = &sr.settings[i]
					}
				}
				if decl == nil {
					names := make([]string, len(sr.settings))
					for i, s := range sr.settings {
						names[i] = s.Name
					}
					l.errorf(rp(sv.keyRng), "Unsupported setting",
						"plugin %q has no setting %q.%s Its settings are %s.", plugin, sv.key, didYouMean(sv.key, names), quotedList(names))
					continue
				}
			}
			s, ok := l.settingString(plugin, sv, decl)
			if !ok {
				continue
			}
			if prev, ok := merged[n][plugin][sv.key]; ok && prev.value != s {
				l.errorf(rp(sv.valRng), "Conflicting plugin settings",
					"node %q already sets %s = %q for plugin %q at %s; a node runs one %s plugin with one configuration, so give the same value or remove one.",
					n.Name, sv.key, prev.value, plugin, prev.rng.String(), plugin)
				continue
			}
			merged[n][plugin][sv.key] = origin{value: s, rng: sv.valRng}
			own[sv.key] = s
		}
		if bs.set != nil && len(bs.values) > 0 {
			bs.set(own)
		}
	}
	for _, n := range l.t.Nodes {
		n.pluginSettings = map[string]map[string]string{}
		for _, plugin := range n.pluginOrder {
			vals := map[string]string{}
			for k, o := range merged[n][plugin] {
				vals[k] = o.value
			}
			if sr := l.schemas[plugin]; sr != nil && sr.known {
				for _, s := range sr.settings {
					if _, ok := vals[s.Name]; ok {
						continue
					}
					if s.Default != "" {
						vals[s.Name] = s.Default
					} else if s.Required {
						l.errorf(rp(firstUse[n][plugin]), "Missing required setting",
							"plugin %q requires setting %q (%s%s); add settings = { %s = ... } to this block.",
							plugin, s.Name, s.Type, describeSetting(s), s.Name)
					}
				}
			}
			n.pluginSettings[plugin] = vals
		}
	}
}

func describeSetting(s transport.Setting) string {
	if s.Description == "" {
		return ""
	}
	return ": " + s.Description
}

// settingString checks one setting value and returns it in the string
// form plugins receive ("9600", "true", "1.5s").
func (l *loader) settingString(plugin string, sv settingValue, decl *transport.Setting) (string, bool) {
	v := sv.val
	if !v.IsKnown() {
		return "", false // a variable without a value, reported already
	}
	bad := func(format string, args ...any) (string, bool) {
		l.errorf(rp(sv.valRng), "Invalid setting value", format, args...)
		return "", false
	}
	if v.IsNull() || !v.IsKnown() {
		return bad("setting %q of plugin %q has no value; remove it to use the default.", sv.key, plugin)
	}
	t := v.Type()
	if t != cty.String && t != cty.Number && t != cty.Bool {
		return bad("setting %q must be a string, a number or a bool; this is %s.", sv.key, describe(v))
	}
	if decl == nil {
		switch t {
		case cty.String:
			return v.AsString(), true
		case cty.Number:
			return numberText(v), true
		}
		return strconv.FormatBool(v.True()), true
	}
	switch decl.Type {
	case transport.Int:
		switch {
		case t == cty.Number && isWhole(v):
			return numberText(v), true
		case t == cty.String:
			if _, err := strconv.ParseInt(v.AsString(), 10, 64); err == nil {
				return v.AsString(), true
			}
		}
		return bad("%s must be an int (a whole number such as 9600); this is %s.", sv.key, describe(v))
	case transport.Bool:
		switch {
		case t == cty.Bool:
			return strconv.FormatBool(v.True()), true
		case t == cty.String && (v.AsString() == "true" || v.AsString() == "false"):
			return v.AsString(), true
		}
		return bad("%s must be a bool (true or false); this is %s.", sv.key, describe(v))
	case transport.Duration:
		if t == cty.String {
			if _, err := time.ParseDuration(v.AsString()); err == nil {
				return v.AsString(), true
			}
		}
		return bad("%s must be a duration written as a string with a unit, such as \"1.5s\" or \"200ms\"; this is %s.", sv.key, describe(v))
	default: // transport.String and types this version does not know
		if t == cty.String {
			return v.AsString(), true
		}
		if decl.Type != transport.String {
			// A newer plugin's type: pass it on as text.
			if t == cty.Number {
				return numberText(v), true
			}
			return strconv.FormatBool(v.True()), true
		}
		return bad("%s must be a string; this is %s. Put the value in quotes.", sv.key, describe(v))
	}
}
