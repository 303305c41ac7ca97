package node

import "runtime"

// Workers with messages are run by runner goroutines. A runner that finds
// no more work parks for a while as an idle runner instead of exiting, up to
// maxIdleRunners per node, and the next worker that wakes up is handed to
// it. Starting a fresh goroutine per wake-up would be simpler, but a new
// goroutine starts on a tiny stack that a handler's call chain (route,
// enqueue, a transport) outgrows at once, and growing and copying the stack
// cost more than the message itself (it was 65% of CPU time in a 3-hop
// request/reply profile). Idle runners belong to the node, not to workers:
// a node with a million idle workers still holds at most maxIdleRunners
// parked goroutines.

// maxIdleRunners bounds parked runners per node.
var maxIdleRunners = max(16, 8*runtime.GOMAXPROCS(0))

// schedule runs w on an idle runner or a new one. The caller holds w.mu and
// has set w.running; schedule never blocks.
func (n *Node) schedule(w *worker) {
	select {
	case n.runq <- w:
	default:
		go n.runner(w)
	}
}

func (n *Node) runner(w *worker) {
	for {
		w.run()
		if n.idleRunners.Add(1) > int64(maxIdleRunners) {
			n.idleRunners.Add(-1)
			return
		}
		select {
		case w = <-n.runq:
			n.idleRunners.Add(-1)
		case <-n.life.Done():
			n.idleRunners.Add(-1)
			return
		}
	}
}
