package wire

import (
	"bufio"
	"io"
	"strconv"
)

// Writer buffers commands for one connection; Flush sends them. Numbers are
// formatted straight into the buffer's free space, so encoding allocates
// nothing. The zero value is not usable; create one with NewWriter.
type Writer struct {
	b   *bufio.Writer
	dst io.Writer
}

// NewWriter returns a Writer to dst with a buffer of size bytes (4 KiB when
// size is not positive).
func NewWriter(dst io.Writer, size int) *Writer {
	if size <= 0 {
		size = 4096
	}
	return &Writer{b: bufio.NewWriterSize(dst, size), dst: dst}
}

// Flush writes the buffered commands. After an error what was not written
// is dropped, and the Writer may be used again.
func (w *Writer) Flush() error {
	err := w.b.Flush()
	if err != nil {
		w.b.Reset(w.dst)
	}
	return err
}

// writeInt writes n in decimal.
func (w *Writer) writeInt(n int64) { w.b.Write(strconv.AppendInt(w.b.AvailableBuffer(), n, 10)) }

// writeUint writes n in decimal.
func (w *Writer) writeUint(n uint64) { w.b.Write(strconv.AppendUint(w.b.AvailableBuffer(), n, 10)) }

// Arithmetic writes the meta arithmetic command that adds delta to the
// counter at key, which must be legal (see LegalKey), and returns its value
// (see the forms in the package doc): a positive delta creates a missing
// counter with value delta and the given expiration (see Expiration), zero
// reads it, a negative one subtracts. Reader.Arithmetic reads the answer.
func (w *Writer) Arithmetic(key string, delta int64, exptime int32) {
	w.b.WriteString("ma ")
	w.b.WriteString(key)
	switch {
	case delta > 0:
		w.b.WriteString(" N")
		w.writeInt(int64(exptime))
		w.b.WriteString(" J")
		w.writeInt(delta)
		w.b.WriteString(" D")
		w.writeInt(delta)
	case delta == 0:
		w.b.WriteString(" D0")
	default:
		w.b.WriteString(" MD D")
		w.writeUint(uint64(-delta)) // right even for math.MinInt64
	}
	w.b.WriteString(" v\r\n")
}

// Get writes a multi-key get of the counters at keys, which must be legal
// and at least one. Reader.Counters reads the answer.
func (w *Writer) Get(keys []string) {
	w.b.WriteString("get")
	for _, k := range keys {
		w.b.WriteByte(' ')
		w.b.WriteString(k)
	}
	w.b.WriteString("\r\n")
}

// MetaGet writes the meta get of the value at key, which must be legal,
// asking for the value, its CAS unique and its key. Reader.MetaGet reads
// the answer.
func (w *Writer) MetaGet(key string) {
	w.b.WriteString("mg ")
	w.b.WriteString(key)
	w.b.WriteString(" v c k\r\n")
}

// MetaSet writes the meta set of value at key, which must be legal, with
// the given expiration: with cas 0 in add mode, which stores only if the key
// is missing; otherwise only if the item's CAS unique is still cas. value
// may hold any bytes: it is framed by its length. Reader.MetaSet reads the
// answer.
func (w *Writer) MetaSet(key string, value []byte, cas uint64, exptime int32) {
	w.b.WriteString("ms ")
	w.b.WriteString(key)
	w.b.WriteByte(' ')
	w.writeInt(int64(len(value)))
	w.b.WriteString(" T")
	w.writeInt(int64(exptime))
	if cas == 0 {
		w.b.WriteString(" ME\r\n")
	} else {
		w.b.WriteString(" C")
		w.writeUint(cas)
		w.b.WriteString("\r\n")
	}
	w.b.Write(value)
	w.b.WriteString("\r\n")
}

// Stats writes the stats command. Reader.Stats reads the answer.
func (w *Writer) Stats() { w.b.WriteString("stats\r\n") }
