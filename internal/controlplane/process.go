package controlplane

import (
	"bytes"
	"io"
	"sync"
)

// prefixWriter writes each complete line to w as "[name] line", serialized by a mutex shared by
// all the processes of one control plane.
type prefixWriter struct {
	mu     *sync.Mutex
	w      io.Writer
	prefix []byte
	buf    []byte
}

func (pw *prefixWriter) Write(b []byte) (int, error) {
	pw.mu.Lock()
	defer pw.mu.Unlock()
	pw.buf = append(pw.buf, b...)
	for {
		i := bytes.IndexByte(pw.buf, '\n')
		if i < 0 {
			break
		}
		line := make([]byte, 0, len(pw.prefix)+i+1)
		line = append(append(line, pw.prefix...), pw.buf[:i+1]...)
		pw.buf = pw.buf[i+1:]
		// The log sink failing must not kill the child (a broken pipe would): drop the line.
		_, _ = pw.w.Write(line)
	}
	return len(b), nil
}
