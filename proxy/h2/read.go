package h2

import (
	"strconv"
	"time"

	"golang.org/x/net/http2"
)

// The reader goroutine: frames in, per RFC 9113's stream states and both
// flow-control windows. A connection error is returned (GOAWAY, close); a
// stream error resets that stream and the connection goes on.

// calm ends a connection that spent a budget: streams refused in a row
// (refusedLimit), or frames that cost work and nothing else (conn.emptyRun).
func (c *conn) calm() error {
	c.s.protocolError()
	return http2.ConnectionError(http2.ErrCodeEnhanceYourCalm)
}

// streamError resets stream id for a violation of the client's.
func (c *conn) streamError(id uint32, code http2.ErrCode) {
	c.s.protocolError()
	c.mu.Lock()
	if st := c.streams[id]; st != nil {
		st.localDone = true
		st.violated = st.violated || !st.reset
		st.cancelLocked()
	}
	c.mu.Unlock()
	c.resetStream(id, code)
}

func (c *conn) process(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		return c.processHeaders(f)
	case *http2.DataFrame:
		return c.processData(f)
	case *http2.SettingsFrame:
		if f.IsAck() {
			return nil
		}
		return c.processSettings(f)
	case *http2.PingFrame:
		if f.StreamID != 0 {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		if !f.IsAck() {
			data := f.Data
			c.write(func() { _ = c.wfr.WritePing(true, data) })
		} else if f.Data == drainPing { // a round trip since the first GOAWAY
			c.goAwayGraceful()
		}
	case *http2.WindowUpdateFrame:
		return c.processWindowUpdate(f)
	case *http2.RSTStreamFrame:
		return c.processReset(f)
	case *http2.PriorityFrame:
		c.mu.Lock()
		c.priorities++
		over := c.priorities > priorityPerStream*(1+c.opened)
		c.mu.Unlock()
		if over {
			return c.calm()
		}
		if f.StreamDep == f.StreamID {
			c.streamError(f.StreamID, http2.ErrCodeProtocol)
		}
	case *http2.GoAwayFrame: // the client opens no more streams: end when ours are done
		c.goAwayGraceful()
	case *http2.PushPromiseFrame:
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	return nil // unknown frame types are ignored
}

// headerStreamError handles a stream error ReadFrame reported for a
// header block: the stream was opened (its id counts) and is reset.
func (c *conn) headerStreamError(se http2.StreamError) error {
	if se.StreamID%2 == 0 {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	c.mu.Lock()
	if se.StreamID > c.maxStreamID {
		c.maxStreamID = se.StreamID
	}
	c.mu.Unlock()
	c.streamError(se.StreamID, se.Code)
	return nil
}

func (c *conn) processHeaders(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	if id%2 == 0 {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	c.mu.Lock()
	if st := c.streams[id]; st != nil {
		// Trailers of a request body.
		if st.remoteDone && st.localDone && !st.reset {
			// Both sides ended, its handler not yet gone: closed, and
			// frames after END_STREAM are a connection error (RFC 9113
			// 5.1), as once it is gone (below).
			c.mu.Unlock()
			c.s.protocolError()
			return http2.ConnectionError(http2.ErrCodeStreamClosed)
		}
		if st.remoteDone || st.reset {
			c.mu.Unlock()
			c.streamError(id, http2.ErrCodeStreamClosed)
			return nil
		}
		if !f.StreamEnded() || len(f.PseudoFields()) > 0 {
			c.mu.Unlock()
			c.streamError(id, http2.ErrCodeProtocol)
			return nil
		}
		st.remoteDone = true
		st.trailers = f.RegularFields()
		bad := st.ContentLength >= 0 && st.received != st.ContentLength
		c.cond.Broadcast()
		c.mu.Unlock()
		if bad {
			c.streamError(id, http2.ErrCodeProtocol)
		}
		return nil
	}
	if id <= c.maxStreamID {
		c.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	c.maxStreamID = id
	c.opened++
	if c.goingAway {
		c.mu.Unlock()
		return nil // after GOAWAY: not processed (the client may retry it elsewhere)
	}
	if f.HasPriority() && f.Priority.StreamDep == id {
		c.mu.Unlock()
		c.streamError(id, http2.ErrCodeProtocol)
		return nil
	}
	if c.running >= int(c.s.maxStreams()) {
		c.refused++
		calm := c.refused > refusedLimit
		c.mu.Unlock()
		if calm {
			return c.calm()
		}
		c.resetStream(id, http2.ErrCodeRefusedStream)
		return nil
	}
	c.mu.Unlock()

	st := &Stream{c: c, id: id, ContentLength: -1, Start: time.Now()}
	if f.Truncated {
		st.tooLarge = true
	} else if !st.parseHead(f) {
		c.streamError(id, http2.ErrCodeProtocol)
		return nil
	}
	st.HasBody = !f.StreamEnded()
	if !st.HasBody && st.ContentLength > 0 {
		c.streamError(id, http2.ErrCodeProtocol)
		return nil
	}

	c.mu.Lock()
	st.sendWindow = int64(c.peerInitial)
	st.recvWindow = int64(c.s.streamWindow())
	st.remoteDone = !st.HasBody
	c.streams[id] = st
	c.running++
	c.refused = 0
	c.armIdleLocked()
	c.mu.Unlock()
	select {
	case c.work <- st: // an idle stream goroutine takes it
	default:
		go c.streamWorker(st)
	}
	return nil
}

// parseHead takes the request's pseudo-header fields and checks the
// regular ones: those of a connection (RFC 9113 8.2.2) make the request
// malformed.
func (st *Stream) parseHead(f *http2.MetaHeadersFrame) bool {
	for _, hf := range f.PseudoFields() {
		switch hf.Name {
		case ":method":
			st.Method = hf.Value
		case ":scheme":
			st.Scheme = hf.Value
		case ":authority":
			st.Authority = hf.Value
		case ":path":
			st.Path = hf.Value
		default:
			return false // :status, :protocol (extended CONNECT is not offered)
		}
	}
	if st.Method == "" {
		return false
	}
	if st.Method == "CONNECT" {
		if st.Scheme != "" || st.Path != "" || st.Authority == "" {
			return false
		}
	} else if st.Scheme == "" || st.Path == "" {
		return false
	}
	st.Fields = f.RegularFields()
	for _, hf := range st.Fields {
		switch hf.Name {
		case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
			return false
		case "te":
			if hf.Value != "trailers" {
				return false
			}
		case "content-length":
			n, err := strconv.ParseUint(hf.Value, 10, 63)
			if err != nil || st.ContentLength >= 0 && int64(n) != st.ContentLength {
				return false
			}
			st.ContentLength = int64(n)
		case "host":
			if st.Authority == "" {
				st.Authority = hf.Value
			}
		}
	}
	return true
}

func (c *conn) processData(f *http2.DataFrame) error {
	id := f.StreamID
	n := int64(f.Length)
	data := f.Data()
	empty := len(data) == 0 && !f.StreamEnded()
	c.mu.Lock()
	if empty {
		c.emptyRun++
		if c.emptyRun > emptyDataLimit {
			c.mu.Unlock()
			return c.calm()
		}
	} else {
		c.emptyRun = 0
	}
	if n > c.recvWindow {
		c.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	c.recvWindow -= n
	st := c.streams[id]
	if st == nil || st.remoteDone || st.reset {
		c.recvUnacked += n // nobody reads it: given back at once
		grant := c.takeConnGrantLocked()
		idle := id > c.maxStreamID
		ours := st != nil && st.reset && !st.clientReset // we reset it; DATA in flight is ignored
		c.mu.Unlock()
		c.sendGrant(0, grant)
		switch {
		case idle:
			return http2.ConnectionError(http2.ErrCodeProtocol)
		case ours:
			return nil
		}
		c.streamError(id, http2.ErrCodeStreamClosed)
		return nil
	}
	if n > st.recvWindow {
		c.recvUnacked += n
		grant := c.takeConnGrantLocked()
		c.mu.Unlock()
		c.sendGrant(0, grant)
		c.streamError(id, http2.ErrCodeFlowControl)
		return nil
	}
	st.recvWindow -= n
	if pad := n - int64(len(data)); pad > 0 { // padding is consumed at once
		st.unacked += pad
		c.recvUnacked += pad
	}
	st.received += int64(len(data))
	bad := st.ContentLength >= 0 && (st.received > st.ContentLength || f.StreamEnded() && st.received != st.ContentLength)
	if !bad {
		st.body = append(st.body, data...)
		if f.StreamEnded() {
			st.remoteDone = true
		}
		if !empty { // nothing for a reader to take: nobody is woken
			c.cond.Broadcast()
		}
	}
	c.mu.Unlock()
	if bad {
		c.streamError(id, http2.ErrCodeProtocol)
	}
	return nil
}

func (c *conn) processSettings(f *http2.SettingsFrame) error {
	var tableSize uint32
	setTable := false
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingInitialWindowSize:
			c.mu.Lock()
			delta := int64(s.Val) - int64(c.peerInitial)
			c.peerInitial = int32(s.Val)
			for _, st := range c.streams {
				st.sendWindow += delta
				if st.sendWindow > maxWindow {
					c.mu.Unlock()
					return http2.ConnectionError(http2.ErrCodeFlowControl)
				}
			}
			c.cond.Broadcast()
			c.mu.Unlock()
		case http2.SettingMaxFrameSize:
			c.mu.Lock()
			c.peerMaxFrame = s.Val
			c.mu.Unlock()
		case http2.SettingHeaderTableSize:
			tableSize, setTable = s.Val, true
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.write(func() {
		if setTable {
			c.henc.SetMaxDynamicTableSizeLimit(tableSize)
		}
		_ = c.wfr.WriteSettingsAck()
	})
	return nil
}

func (c *conn) processWindowUpdate(f *http2.WindowUpdateFrame) error {
	inc := int64(f.Increment)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.updates++
	if c.updates > updatesPerFrame*(1+c.dataSent+c.opened) ||
		int64(c.dribbles) > dribbleLimit+c.dataBytes/dribbleBytes {
		return c.calm()
	}
	if f.StreamID == 0 {
		c.sendWindow += inc
		if c.sendWindow > maxWindow {
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
		c.cond.Broadcast()
		return nil
	}
	if f.StreamID > c.maxStreamID {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	st := c.streams[f.StreamID]
	if st == nil || st.reset {
		return nil // closed: a late update
	}
	st.sendWindow += inc
	if st.sendWindow > maxWindow {
		c.mu.Unlock()
		c.streamError(f.StreamID, http2.ErrCodeFlowControl)
		c.mu.Lock()
		return nil
	}
	c.cond.Broadcast()
	return nil
}

func (c *conn) processReset(f *http2.RSTStreamFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f.StreamID > c.maxStreamID {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	if st := c.streams[f.StreamID]; st != nil && !st.reset {
		st.clientReset = true
		st.localDone = true
		st.cancelLocked()
	}
	return nil
}

// takeConnGrantLocked returns how much connection window to give back
// now (0: not yet, the consumed bytes are still few). Under c.mu.
func (c *conn) takeConnGrantLocked() uint32 {
	if c.recvUnacked < c.connWindow()/4 && c.recvWindow > 0 {
		return 0
	}
	g := c.recvUnacked
	c.recvUnacked = 0
	c.recvWindow += g
	return uint32(g)
}

// sendGrant writes WINDOW_UPDATE for inc bytes (nothing when 0).
func (c *conn) sendGrant(id uint32, inc uint32) {
	if inc > 0 {
		c.write(func() { _ = c.wfr.WriteWindowUpdate(id, inc) })
	}
}
