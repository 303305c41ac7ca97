package routing

import (
	"strings"
	"testing"
)

func TestNewAddress(t *testing.T) {
	a, err := NewAddress("local", "echo")
	if err != nil || a != Local("echo") || !a.IsLocal() {
		t.Fatalf("NewAddress(local, echo) = %#v, %v", a, err)
	}
	if a, err := NewAddress("tcp", "127.0.0.1:1"); err != nil || a.IsLocal() {
		t.Fatalf("NewAddress(tcp) = %#v, %v", a, err)
	}
	bad := []struct{ typ, value, msg string }{
		{"tcp", "", "empty value"},
		{"", "", "empty value"},
		{"Tcp", "x", "must start with a-z"},
		{"1tcp", "x", "must start with a-z"},
		{"t cp", "x", "must start with a-z"},
		{"service", "x", "reserved"},
		{"worker", "x", "reserved"},
		{strings.Repeat("a", MaxTypeLen+1), "x", "longer than"},
		{"tcp", strings.Repeat("v", MaxValueLen+1), "limit is 1024"},
	}
	for _, c := range bad {
		_, err := NewAddress(c.typ, c.value)
		if err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("NewAddress(%q, %.10q) = %v, want error containing %q", c.typ, c.value, err, c.msg)
		}
	}
}

func TestRouteOperations(t *testing.T) {
	r := MustParseRoute("/service/h1/service/h2/service/echo")
	next, ok := r.Next()
	if !ok || next != Local("h1") {
		t.Fatalf("Next = %v, %v", next, ok)
	}
	first, rest, err := r.Step()
	if err != nil || first != Local("h1") || rest.String() != "/service/h2/service/echo" {
		t.Fatalf("Step = %v, %v, %v", first, rest, err)
	}
	if r.String() != "/service/h1/service/h2/service/echo" {
		t.Fatalf("Step changed the receiver: %v", r)
	}

	ret := MustParseRoute("/service/app")
	ret2, err := ret.Prepend(Local("h1"))
	if err != nil || ret2.String() != "/service/h1/service/app" {
		t.Fatalf("Prepend = %v, %v", ret2, err)
	}
	// Prepending to a shared route must not disturb other holders.
	ret3, _ := ret.Prepend(Local("h9"))
	if ret2.String() != "/service/h1/service/app" || ret3.String() != "/service/h9/service/app" || ret.String() != "/service/app" {
		t.Fatalf("Prepend aliasing: %v %v %v", ret, ret2, ret3)
	}

	app, err := rest.Append(Local("x"), Address{Type: "tcp", Value: "1.2.3.4:5"})
	if err != nil || app.String() != "/service/h2/service/echo/service/x/tcp/1.2.3.4:5" {
		t.Fatalf("Append = %v, %v", app, err)
	}
	// Append on a sub-slice must not write into the parent's backing array.
	if r.String() != "/service/h1/service/h2/service/echo" {
		t.Fatalf("Append changed the parent route: %v", r)
	}
	cat, err := r.Concat(ret)
	if err != nil || cat.String() != "/service/h1/service/h2/service/echo/service/app" {
		t.Fatalf("Concat = %v, %v", cat, err)
	}

	c := r.Clone()
	c[0] = Local("changed")
	if r[0] != Local("h1") {
		t.Fatal("Clone shares the backing array")
	}
	if Route(nil).Clone() != nil {
		t.Fatal("Clone(nil) != nil")
	}

	var empty Route
	if _, ok := empty.Next(); ok {
		t.Fatal("Next on empty route succeeded")
	}
	if _, _, err := empty.Step(); err == nil {
		t.Fatal("Step on empty route succeeded")
	}
	if empty.String() != "/" {
		t.Fatalf("empty route prints %q", empty.String())
	}
}

func TestRouteHopLimit(t *testing.T) {
	full := make(Route, MaxHops)
	for i := range full {
		full[i] = Local("x")
	}
	if err := full.Validate(); err != nil {
		t.Fatalf("64 hops rejected: %v", err)
	}
	if _, err := full.Prepend(Local("y")); err == nil || !strings.Contains(err.Error(), "limit 64") {
		t.Fatalf("Prepend beyond the limit: %v", err)
	}
	if _, err := full[:MaxHops-1].Append(Local("a"), Local("b")); err == nil {
		t.Fatal("Append beyond the limit succeeded")
	}
	if _, err := full.Concat(Route{Local("z")}); err == nil {
		t.Fatal("Concat beyond the limit succeeded")
	}
	over := append(full.Clone(), Local("x"))
	if err := over.Validate(); err == nil || !strings.Contains(err.Error(), "65 hops") {
		t.Fatalf("Validate(65 hops) = %v", err)
	}
	if _, err := NewRoute(over...); err == nil {
		t.Fatal("NewRoute(65 hops) succeeded")
	}
	if _, err := NewRoute(Local("a"), Address{Type: "tcp"}); err == nil || !strings.Contains(err.Error(), "hop 2") {
		t.Fatalf("NewRoute with a bad hop: %v", err)
	}
}

func TestRouteEqual(t *testing.T) {
	a := Route{Local("x"), {Type: "tcp", Value: "h:1"}}
	b := Route{{Type: "local", Value: "x"}, {Type: "tcp", Value: "h:1"}}
	if !a.Equal(b) {
		t.Fatal("local and empty type should compare equal")
	}
	if a.Equal(a[:1]) || a.Equal(Route{Local("x"), {Type: "udp", Value: "h:1"}}) {
		t.Fatal("different routes compare equal")
	}
	if !Route(nil).Equal(Route{}) {
		t.Fatal("nil and empty route differ")
	}
}
