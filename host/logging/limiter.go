// Package logging keeps a node's log useful under attack: Limiter
// rate-limits repeated warnings per cause (the first few, then one line
// with a count per interval), and RotatingFile caps the log file's size,
// keeping one previous file (node.log and node.log.1).
package logging

import (
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Defaults for Limiter.
const (
	// DefaultBurst is how many lines per cause are logged in one interval
	// before the rest are counted instead.
	DefaultBurst = 5
	// DefaultInterval is how often a cause that keeps recurring gets one
	// line carrying the number of lines suppressed since the last one.
	DefaultInterval = 10 * time.Second
	// DefaultMaxCauses bounds the causes a Limiter tracks. Causes are
	// chosen by code, not by peers, so this is only a safety net; when it
	// is reached, the oldest window is forgotten.
	DefaultMaxCauses = 1024
)

// Limiter decides which occurrences of a repeated log line are written.
// The zero value uses the defaults; it is safe for concurrent use.
type Limiter struct {
	// Burst is the number of lines per cause logged per interval;
	// default DefaultBurst.
	Burst int
	// Interval is the window; default DefaultInterval.
	Interval time.Duration
	// MaxCauses bounds the causes tracked; default DefaultMaxCauses.
	MaxCauses int

	now func() time.Time // tests

	mu     sync.Mutex
	causes map[string]*window
}

type window struct {
	start      time.Time
	logged     int
	suppressed uint64
}

// NewLimiter returns a Limiter with burst lines per interval per cause; zero
// values take the defaults.
func NewLimiter(burst int, interval time.Duration) *Limiter {
	return &Limiter{Burst: burst, Interval: interval}
}

// Allow records one occurrence of cause. ok says whether to log it; when ok,
// suppressed is the number of occurrences not logged since the last line
// for this cause (add it to the line so nothing is silently lost).
func (l *Limiter) Allow(cause string) (ok bool, suppressed uint64) {
	burst, interval, maxCauses := l.Burst, l.Interval, l.MaxCauses
	if burst <= 0 {
		burst = DefaultBurst
	}
	if interval <= 0 {
		interval = DefaultInterval
	}
	if maxCauses <= 0 {
		maxCauses = DefaultMaxCauses
	}
	now := time.Now
	if l.now != nil {
		now = l.now
	}
	t := now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.causes == nil {
		l.causes = map[string]*window{}
	}
	w := l.causes[cause]
	if w == nil {
		if len(l.causes) >= maxCauses {
			l.evictOldest()
		}
		w = &window{start: t}
		l.causes[cause] = w
	}
	if t.Sub(w.start) >= interval {
		w.start, w.logged = t, 0
	}
	if w.logged < burst {
		w.logged++
		s := w.suppressed
		w.suppressed = 0
		return true, s
	}
	w.suppressed++
	return false, 0
}

func (l *Limiter) evictOldest() {
	var oldest string
	var at time.Time
	first := true
	for k, w := range l.causes {
		if first || w.start.Before(at) {
			oldest, at, first = k, w.start, false
		}
	}
	delete(l.causes, oldest)
}

// Warn logs msg at warn level unless cause has been logged Burst times in
// the current interval; a line logged after some were suppressed carries
// "suppressed"=count.
func (l *Limiter) Warn(log hclog.Logger, cause, msg string, args ...any) {
	l.log(log, hclog.Warn, cause, msg, args)
}

// Info is Warn at info level.
func (l *Limiter) Info(log hclog.Logger, cause, msg string, args ...any) {
	l.log(log, hclog.Info, cause, msg, args)
}

// Debug is Warn at debug level; it costs nothing when debug is off.
func (l *Limiter) Debug(log hclog.Logger, cause, msg string, args ...any) {
	if !log.IsDebug() {
		return
	}
	l.log(log, hclog.Debug, cause, msg, args)
}

func (l *Limiter) log(log hclog.Logger, level hclog.Level, cause, msg string, args []any) {
	ok, n := l.Allow(cause)
	if !ok {
		return
	}
	if n > 0 {
		args = append(args[:len(args):len(args)], "suppressed", n)
	}
	log.Log(level, msg, args...)
}
