package transport

import "github.com/quic-go/quic-go"

// streamCredit hands a peer back the credit of the streams it opened in
// batches (the listener's connections run with quic-go's
// RequireStreamCreditRelease). By default quic-go grants a new stream,
// with a MAX_STREAMS frame, as each stream completes: a packet of its own
// after a call's answer is acknowledged, which the caller must
// acknowledge in turn. A site leader's run call was a request, an answer
// and their acknowledgements, then those two more packets for each
// device. Here the credit of the streams accepted so far is released when
// a new stream arrives and batch of them are held: the grants of many
// streams then go in one packet, mostly with an answer or an
// acknowledgement the member sends anyway.
//
// A peer can always open a stream: at most batch streams are held, and
// batch is less than the connection's stream limit (for a limit under 4,
// every stream's credit is released as it is accepted).
type streamCredit struct {
	batch int
	held  []*quic.Stream
}

// maxCreditBatch is the most streams whose credit is held back: a
// quarter of the default limit of 256 would keep 64 finished streams'
// state per connection.
const maxCreditBatch = 16

func newStreamCredit(limit int64) *streamCredit {
	return &streamCredit{batch: int(min(maxCreditBatch, limit/4))}
}

// accepted takes a newly accepted stream: it releases the credit of the
// streams held before it when they are batch, and holds the new one.
func (c *streamCredit) accepted(qs *quic.Stream) {
	if c.batch == 0 {
		qs.ReleaseStreamCredit()
		return
	}
	if len(c.held) >= c.batch {
		for _, s := range c.held {
			s.ReleaseStreamCredit() // granted once the stream has completed
		}
		clear(c.held)
		c.held = c.held[:0]
	}
	c.held = append(c.held, qs)
}
