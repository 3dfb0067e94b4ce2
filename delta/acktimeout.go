package delta

import (
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ackTimer bounds how long a stream's responses may stay unacknowledged
// (Config.AckTimeout). It belongs to the stream's handler goroutine: one
// time.Timer per stream, set for the oldest response in flight of any type,
// so nothing is started per response.
//
// It notes when each type's latest response went out by watching the type's
// nonce: a nonce it has not seen on an in-flight type is a response sent since
// its last look. The handler calls update after every round of sends, so the
// time noted is at most that round's length after the write, never before it.
type ackTimer struct {
	timeout time.Duration
	timer   *time.Timer
	// C fires when the oldest response in flight may have timed out; nil
	// when the timeout is off, so a select never picks it.
	C <-chan time.Time
	// armed is the deadline the timer is set for; zero while it is stopped.
	armed time.Time
	// sent holds, per entry of stream.order, the nonce of the latest
	// in-flight response seen and when it was first seen.
	sent []sentMark
}

type sentMark struct {
	nonce string
	at    time.Time
}

func newAckTimer(timeout time.Duration) *ackTimer {
	a := &ackTimer{timeout: timeout}
	if timeout > 0 {
		a.timer = time.NewTimer(time.Hour)
		a.timer.Stop()
		a.C = a.timer.C
	}
	return a
}

func (a *ackTimer) stop() {
	if a.timer != nil {
		a.timer.Stop()
	}
}

// update notes the responses sent since the last call and sets the timer
// for the oldest response still in flight, or stops it when none is.
func (a *ackTimer) update(st *stream) {
	if a.timeout <= 0 {
		return
	}
	for len(a.sent) < len(st.order) {
		a.sent = append(a.sent, sentMark{})
	}
	var now, oldest time.Time
	for i, ts := range st.order {
		if !ts.inflight {
			continue
		}
		m := &a.sent[i]
		if m.nonce != ts.nonce {
			if now.IsZero() {
				now = time.Now()
			}
			m.nonce, m.at = ts.nonce, now
		}
		if oldest.IsZero() || m.at.Before(oldest) {
			oldest = m.at
		}
	}
	if oldest.IsZero() {
		if !a.armed.IsZero() {
			a.timer.Stop()
			a.armed = time.Time{}
		}
		return
	}
	deadline := oldest.Add(a.timeout)
	if deadline.Equal(a.armed) {
		return
	}
	a.timer.Reset(time.Until(deadline))
	a.armed = deadline
}

// fired is called when C fires. It ends the stream, with the error it
// returns, when the oldest response in flight has waited for the whole
// timeout; otherwise the next update sets the timer again.
func (a *ackTimer) fired(st *stream) error {
	a.armed = time.Time{}
	var oldest *typeState
	var at time.Time
	for i, ts := range st.order {
		if i >= len(a.sent) || !ts.inflight || a.sent[i].nonce != ts.nonce {
			continue
		}
		if oldest == nil || a.sent[i].at.Before(at) {
			oldest, at = ts, a.sent[i].at
		}
	}
	if oldest == nil {
		return nil
	}
	if waited := time.Since(at); waited >= a.timeout {
		return st.ackTimedOut(oldest, a.timeout, waited)
	}
	return nil
}

// ackTimedOut counts and logs a response left unacknowledged past the
// timeout, and returns the status that ends the stream.
func (st *stream) ackTimedOut(ts *typeState, timeout, waited time.Duration) error {
	st.server.metrics.ACKTimeouts.WithLabelValues(ts.url).Inc()
	// st.log carries node_id: no response is sent before the node is known.
	st.log.Warn("ending a Delta xDS stream: a response was neither ACKed nor NACKed within the ack timeout; the client will reconnect",
		zap.String("type_url", ts.url), zap.String("nonce", ts.nonce),
		zap.Duration("ack_timeout", timeout), zap.Duration("waited", waited.Round(time.Millisecond)))
	return status.Errorf(codes.DeadlineExceeded,
		"the %s response with nonce %q was neither ACKed nor NACKed within the ack timeout of %v (--ack-timeout); ending the stream, the client will reconnect",
		ts.url, ts.nonce, timeout)
}
