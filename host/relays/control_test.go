package relays

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ferryhq/ferry/sdk/routing"
)

func TestControlRoundTrip(t *testing.T) {
	for _, c := range []control{
		{Kind: kindRegister, Nonce: 1, Name: "n3", Node: "n3", Interval: 5 * time.Second, Proof: "0123456789abcdef0123456789abcdef"},
		{Kind: kindRegistered, Nonce: 1 << 62, Name: "n3", Status: statusOK, Forwarder: "/service/forward_to_n3"},
		{Kind: kindPing, Nonce: 7, Name: "x"},
		{Kind: kindPong, Nonce: 7, Name: "x", Status: statusMoved},
		{Kind: kindDelete, Name: "x"},
		{Kind: kindDeleted, Status: statusUnknown},
		{Kind: kindError, Error: "relay name \"\" is empty"},
	} {
		b, err := c.encode()
		if err != nil {
			t.Fatalf("encode %+v: %v", c, err)
		}
		got, err := decodeControl(b)
		if err != nil {
			t.Fatalf("decode %+v: %v", c, err)
		}
		if got != c {
			t.Fatalf("round trip: got %+v, want %+v", got, c)
		}
	}
}

func TestControlRejects(t *testing.T) {
	good, _ := (&control{Kind: kindPing, Nonce: 3, Name: "n3"}).encode()
	for name, tc := range map[string]struct {
		in   []byte
		want string
	}{
		"empty":         {nil, "too short"},
		"version":       {[]byte{9, 1}, "version 9"},
		"kind zero":     {[]byte{controlVersion, 0}, "unknown kind 0"},
		"kind high":     {[]byte{controlVersion, 99}, "unknown kind 99"},
		"truncated":     {good[:len(good)-1], "remain"},
		"bad length":    {[]byte{controlVersion, 1, tagName, 0x80}, "bad length"},
		"huge length":   {[]byte{controlVersion, 1, tagName, 0xff, 0xff, 0xff, 0xff, 0x0f}, "remain"},
		"duplicate":     {append(append([]byte{}, good...), tagName, 1, 'x'), "twice"},
		"nonce trailer": {[]byte{controlVersion, 3, tagNonce, 2, 1, 0}, "not a varint"},
		"interval long": {[]byte{controlVersion, 1, tagInterval, 5, 0xff, 0xff, 0xff, 0xff, 0x0f}, "too long"},
		"oversized":     {append([]byte{controlVersion, 1}, make([]byte, maxControlSize)...), "limit"},
		"long proof":    {append([]byte{controlVersion, 1, tagProof, 65}, make([]byte, 65)...), "proof"},
	} {
		_, err := decodeControl(tc.in)
		if err == nil || !errors.Is(err, errControl) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an errControl containing %q", name, err, tc.want)
		}
	}
	// Unknown tags are skipped, so later versions can add fields.
	withExtra := append(append([]byte{}, good...), 200, 2, 'h', 'i')
	c, err := decodeControl(withExtra)
	if err != nil || c.Name != "n3" || c.Nonce != 3 {
		t.Fatalf("unknown field: got %+v, %v", c, err)
	}
	if _, err := (&control{Kind: kindError, Error: strings.Repeat("x", maxControlSize)}).encode(); err == nil {
		t.Fatal("an oversized control message was encoded")
	}
}

func FuzzDecodeControl(f *testing.F) {
	for _, c := range []control{
		{Kind: kindRegister, Nonce: 1, Name: "n3", Node: "n3", Interval: 5 * time.Second, Proof: string(ownerProof([]byte("secret"), "n3"))},
		{Kind: kindDelete, Nonce: 3, Name: "n3", Proof: "p"},
		{Kind: kindRegistered, Nonce: 2, Name: "n3", Status: statusOK, Forwarder: "/service/forward_to_n3"},
		{Kind: kindPong, Nonce: 7, Name: "x", Status: statusMoved},
		{Kind: kindError, Error: "bad"},
	} {
		b, _ := c.encode()
		f.Add(b)
	}
	f.Add([]byte{controlVersion, 1, 200, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := decodeControl(b)
		if err != nil {
			return
		}
		// What decodes re-encodes to something that decodes to the same.
		e, err := c.encode()
		if err != nil {
			t.Fatalf("re-encode %+v: %v", c, err)
		}
		c2, err := decodeControl(e)
		if err != nil || c2 != c {
			t.Fatalf("round trip: %+v -> %+v, %v", c, c2, err)
		}
	})
}

func FuzzValidName(f *testing.F) {
	for _, s := range []string{"n3", "", "a/b", "forward.to-x_1", strings.Repeat("a", 65)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ValidName(s) != nil {
			return
		}
		if len(s) == 0 || len(s) > MaxNameLen {
			t.Fatalf("accepted %q", s)
		}
		// An accepted name makes a service address that prints and parses back.
		text := routing.Local(ForwarderAddress(s)).String()
		a, err := routing.ParseAddress(text)
		if err != nil || a != routing.Local(ForwarderAddress(s)) || text != "/service/"+ForwarderAddress(s) {
			t.Fatalf("%q: %q -> %v, %v", s, text, a, err)
		}
	})
}
