package transport

import (
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Properties is implemented by a Listener that describes itself beyond its
// address (for example a certificate fingerprint peers must pin). The host
// shows them with the listener; a plugin's listener reports them across the
// plugin boundary as it does in-process. It is optional.
type Properties interface {
	Properties() map[string]string
}

// Settings are a transport's settings parsed against its schema
// (Info.Settings): every value checked against its type, defaults filled in.
// A transport that implements SettingsConfigurer receives them this way,
// already parsed, instead of reading strings.
type Settings struct {
	schema map[string]Setting
	raw    map[string]string
}

// SettingsConfigurer is implemented by a Transport that wants its settings
// parsed: Apply (which Serve uses for every Configure from the host) calls
// ConfigureSettings instead of Configure. Configure stays part of the
// Transport interface for hosts that call it directly.
type SettingsConfigurer interface {
	ConfigureSettings(ctx context.Context, s Settings) error
}

// ParseSettings checks raw against schema: every name declared, every
// required setting present, every value of its declared type. Missing
// settings take their default.
func ParseSettings(schema []Setting, raw map[string]string) (Settings, error) {
	s := Settings{schema: map[string]Setting{}, raw: map[string]string{}}
	for _, d := range schema {
		s.schema[d.Name] = d
		if d.Default != "" {
			s.raw[d.Name] = d.Default
		}
	}
	for _, name := range slices.Sorted(maps.Keys(raw)) {
		d, ok := s.schema[name]
		if !ok {
			known := slices.Sorted(maps.Keys(s.schema))
			return Settings{}, fmt.Errorf("unknown setting %q; this transport accepts: %s", name, strings.Join(known, ", "))
		}
		if err := checkValue(d, raw[name]); err != nil {
			return Settings{}, err
		}
		s.raw[name] = raw[name]
	}
	for _, d := range schema {
		if _, ok := s.raw[d.Name]; d.Required && !ok {
			return Settings{}, fmt.Errorf("setting %q is required: %s", d.Name, d.Description)
		}
		if v, ok := s.raw[d.Name]; ok {
			if err := checkValue(d, v); err != nil {
				return Settings{}, fmt.Errorf("default of %w", err)
			}
		}
	}
	return s, nil
}

func checkValue(d Setting, v string) error {
	var err error
	switch d.Type {
	case Int:
		_, err = strconv.ParseInt(v, 10, 64)
	case Bool:
		_, err = strconv.ParseBool(v)
	case Duration:
		_, err = time.ParseDuration(v)
	}
	if err != nil {
		return fmt.Errorf("setting %q = %q is not a valid %s: %s", d.Name, v, d.Type, typeHint[d.Type])
	}
	return nil
}

// typeHint says what a value of each type looks like, for error messages.
var typeHint = map[SettingType]string{
	Int:      "want a whole number",
	Bool:     "want true or false",
	Duration: "want a duration such as 5s or 250ms",
}

// Has reports whether the setting has a value (given or default).
func (s Settings) Has(name string) bool { _, ok := s.raw[name]; return ok }

// Raw returns the settings as strings, defaults filled in.
func (s Settings) Raw() map[string]string { return maps.Clone(s.raw) }

// String returns a setting's value ("" if it has none).
func (s Settings) String(name string) string { return s.raw[name] }

// Int returns an int setting (0 if it has no value).
func (s Settings) Int(name string) int64 {
	v, _ := strconv.ParseInt(s.raw[name], 10, 64)
	return v
}

// Bool returns a bool setting (false if it has no value).
func (s Settings) Bool(name string) bool {
	v, _ := strconv.ParseBool(s.raw[name])
	return v
}

// Duration returns a duration setting (0 if it has no value).
func (s Settings) Duration(name string) time.Duration {
	v, _ := time.ParseDuration(s.raw[name])
	return v
}

// Check returns a SettingsCheck reading s, for a ConfigureSettings that
// turns settings into its own config with range checks.
func (s Settings) Check() *SettingsCheck { return &SettingsCheck{s: s} }

// SettingsCheck reads a transport's parsed settings and checks what the
// schema's types cannot (ranges, choices, formats). Every method returns the
// setting's value (the zero value when a check failed); the first failure
// is kept for Err, naming the setting and its bad value, so a configuration
// reads as one list of assignments followed by one error check. A setting
// with no value (no default and not given) reads as the zero value,
// unchecked.
type SettingsCheck struct {
	s   Settings
	err error
}

// Invalid records that setting name's value is unusable because of why
// (nothing when why is nil); Err reports the first such failure.
func (c *SettingsCheck) Invalid(name string, why error) {
	if why != nil && c.err == nil {
		c.err = fmt.Errorf("setting %q = %q: %w", name, c.s.raw[name], why)
	}
}

// Err returns the first failed check, or nil.
func (c *SettingsCheck) Err() error { return c.err }

// String returns a string setting ("" if it has none).
func (c *SettingsCheck) String(name string) string { return c.s.String(name) }

// Bool returns a bool setting (false if it has none).
func (c *SettingsCheck) Bool(name string) bool { return c.s.Bool(name) }

// Int returns an int setting, which must lie within [lo, hi].
func (c *SettingsCheck) Int(name string, lo, hi int) int {
	if !c.s.Has(name) {
		return 0
	}
	v := c.s.Int(name)
	if v < int64(lo) || v > int64(hi) {
		c.Invalid(name, fmt.Errorf("want between %d and %d", lo, hi))
		return 0
	}
	return int(v)
}

// PositiveDuration returns a duration setting, which must be above zero.
func (c *SettingsCheck) PositiveDuration(name string) time.Duration {
	if !c.s.Has(name) {
		return 0
	}
	v := c.s.Duration(name)
	if v <= 0 {
		c.Invalid(name, fmt.Errorf("want a positive duration"))
		return 0
	}
	return v
}

// IdleTimeout returns a duration setting that declares a link dead when
// nothing arrived for that long. It must be positive and at least twice the
// duration setting every, the interval at which a healthy peer sends
// something even when it has nothing to say (heartbeat, keepalive), or a
// healthy quiet link would be taken for dead.
func (c *SettingsCheck) IdleTimeout(name, every string) time.Duration {
	v := c.PositiveDuration(name)
	if e := c.s.Duration(every); v > 0 && e > 0 && v < 2*e {
		c.Invalid(name, fmt.Errorf("want at least twice %s (%s), or a healthy quiet link would be taken for dead", every, e))
		return 0
	}
	return v
}

// Apply configures t with raw settings. If t implements
// SettingsConfigurer, it checks raw against t.Info().Settings and calls
// ConfigureSettings with the parsed settings; otherwise it calls Configure
// with raw as given (the transport parses its own strings).
func Apply(ctx context.Context, t Transport, raw map[string]string) error {
	sc, ok := t.(SettingsConfigurer)
	if !ok {
		return t.Configure(ctx, raw)
	}
	s, err := ParseSettings(t.Info().Settings, raw)
	if err != nil {
		return fmt.Errorf("configure %s: %w", t.Info().Name, err)
	}
	return sc.ConfigureSettings(ctx, s)
}

// SettingMaxMessageSize is the conventional name of the setting that lowers
// a transport's largest packet below Info().MaxMessageSize. Every shipped
// transport declares it; EffectiveMaxMessageSize reads it from the settings
// of a transport that does not implement MaxMessageSizer.
const SettingMaxMessageSize = "max_message_size"

// MaxMessageSizer is implemented by a Transport that knows its largest
// packet once configured, which settings can make lower than
// Info().MaxMessageSize (Info must not depend on settings). The host asks
// it after Configure so that a send above the limit fails on the sender's
// side with ErrTooLarge, naming the size and the limit, before the packet
// crosses into the transport; a plugin reports it to the host in its
// answer to Configure. It is optional: without it, the host reads the
// max_message_size setting (see EffectiveMaxMessageSize).
type MaxMessageSizer interface {
	// MaxMessageSize is the largest packet, in bytes, the configured
	// transport carries; 0 or less means Info().MaxMessageSize.
	MaxMessageSize() int
}

// EffectiveMaxMessageSize returns the largest packet t carries once
// configured with settings: t's own MaxMessageSize if it implements
// MaxMessageSizer and reports a positive value (settings are then not
// needed), else MaxMessageSizeFor(t.Info(), settings).
func EffectiveMaxMessageSize(t Transport, settings map[string]string) int {
	info := t.Info()
	if s, ok := t.(MaxMessageSizer); ok {
		if v := s.MaxMessageSize(); v > 0 {
			if info.MaxMessageSize > 0 && v > info.MaxMessageSize {
				return info.MaxMessageSize
			}
			return v
		}
	}
	return MaxMessageSizeFor(info, settings)
}

// MaxMessageSizeFor returns the largest packet a transport described by
// info carries with settings: its max_message_size setting (as given, else
// its default) when info declares one as an Int, never more than
// info.MaxMessageSize; else info.MaxMessageSize.
func MaxMessageSizeFor(info Info, settings map[string]string) int {
	max := info.MaxMessageSize
	for _, d := range info.Settings {
		if d.Name != SettingMaxMessageSize || d.Type != Int {
			continue
		}
		v, ok := settings[d.Name]
		if !ok {
			v = d.Default
		}
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err == nil && n > 0 && n <= math.MaxInt32 && (max <= 0 || int(n) < max) {
			max = int(n)
		}
	}
	return max
}
