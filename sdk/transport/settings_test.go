package transport

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestSettingsCheck(t *testing.T) {
	schema := []Setting{
		{Name: "size", Type: Int, Default: "10"},
		{Name: "wait", Type: Duration, Default: "1s"},
		{Name: "name", Type: String},
		{Name: "on", Type: Bool, Default: "true"},
		{Name: "opt", Type: Int},
		{Name: "beat", Type: Duration, Default: "500ms"},
	}
	parse := func(raw map[string]string) *SettingsCheck {
		t.Helper()
		s, err := ParseSettings(schema, raw)
		if err != nil {
			t.Fatal(err)
		}
		return s.Check()
	}

	c := parse(map[string]string{"name": "x"})
	if c.Int("size", 1, 10) != 10 || c.PositiveDuration("wait") != time.Second || c.String("name") != "x" || !c.Bool("on") || c.Int("opt", 5, 6) != 0 {
		t.Fatal("values read wrong")
	}
	if c.IdleTimeout("wait", "beat") != time.Second || c.Err() != nil {
		t.Fatalf("valid settings: %v", c.Err())
	}

	for _, tc := range []struct {
		raw  map[string]string
		read func(*SettingsCheck)
		want string
	}{
		{map[string]string{"size": "11"}, func(c *SettingsCheck) { c.Int("size", 1, 10) }, `setting "size" = "11": want between 1 and 10`},
		{map[string]string{"size": "-1"}, func(c *SettingsCheck) { c.Int("size", 0, 10) }, `setting "size" = "-1": want between 0 and 10`},
		{map[string]string{"wait": "0s"}, func(c *SettingsCheck) { c.PositiveDuration("wait") }, `setting "wait" = "0s": want a positive duration`},
		{map[string]string{"name": "bad"}, func(c *SettingsCheck) { c.Invalid("name", errTest) }, `setting "name" = "bad": test reason`},
		{map[string]string{"wait": "1s", "size": "1"}, func(c *SettingsCheck) { c.IdleTimeout("wait", "beat") }, ""},
		{map[string]string{"wait": "1s", "beat": "600ms"}, func(c *SettingsCheck) { c.IdleTimeout("wait", "beat") }, `setting "wait" = "1s": want at least twice beat (600ms)`},
		// The first failure is the one reported.
		{map[string]string{"size": "0", "wait": "-1s"}, func(c *SettingsCheck) {
			c.PositiveDuration("wait")
			c.Int("size", 1, 10)
			c.Invalid("name", nil)
		}, `"wait" = "-1s"`},
	} {
		c := parse(tc.raw)
		tc.read(c)
		if err := c.Err(); tc.want == "" && err != nil {
			t.Errorf("%v: %v", tc.raw, err)
		} else if tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%v: got %v, want an error containing %q", tc.raw, err, tc.want)
		}
	}

	// A value of the wrong type is refused by ParseSettings with what the
	// type looks like.
	for raw, want := range map[string]string{"size": "want a whole number", "wait": "want a duration", "on": "want true or false"} {
		_, err := ParseSettings(schema, map[string]string{raw: "?"})
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), `"?"`) {
			t.Errorf("%s = ?: got %v, want an error naming the value and saying %q", raw, err, want)
		}
	}
}

var errTest = errors.New("test reason")
