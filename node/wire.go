package node

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
)

// maxMessageBytes bounds one message on a mesh stream: nothing a peer sends
// can make this node allocate more.
const maxMessageBytes = 4 << 20

// writeMessage writes v as one length-prefixed JSON message, in one Write
// (a QUIC stream may send a separate packet for each).
func writeMessage(w io.Writer, v any) error {
	b, err := appendMessage(nil, v)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// appendMessage appends v to dst as one length-prefixed JSON message.
func appendMessage(dst []byte, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return dst, err
	}
	if len(b) > maxMessageBytes {
		return dst, fmt.Errorf("message of %d bytes exceeds %d", len(b), maxMessageBytes)
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(b)))
	return append(dst, b...), nil
}

// readMessage reads one message written by writeMessage into v, refusing
// one larger than limit bytes and unknown fields.
func readMessage(r io.Reader, v any, limit int) error {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if int64(n) > int64(limit) {
		return fmt.Errorf("message of %d bytes exceeds the %d-byte limit", n, limit)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}
