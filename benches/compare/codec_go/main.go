// Times memberlist's message encoding and decoding — the go-msgpack codec
// with memberlist's struct shapes (field names and types as in memberlist's
// net.go), compound framing as memberlist builds it — on the same packet as
// cairn's benches/gossip.rs (codec/compound_encode_decode): a ping plus ten
// alive broadcasts, encoded into a compound message and decoded back.
package main

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"net"
	"sort"
	"time"

	"github.com/hashicorp/go-msgpack/codec"
)

type ping struct {
	SeqNo      uint32
	Node       string
	SourceAddr []byte `codec:",omitempty"`
	SourcePort uint16 `codec:",omitempty"`
	SourceNode string `codec:",omitempty"`
}

type alive struct {
	Incarnation uint32
	Node        string
	Addr        []byte
	Port        uint16
	Meta        []byte
	Vsn         []uint8
}

func encode(t byte, in interface{}) []byte {
	buf := bytes.NewBuffer(nil)
	buf.WriteByte(t)
	hd := codec.MsgpackHandle{}
	if err := codec.NewEncoder(buf, &hd).Encode(in); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

func compound(msgs [][]byte) []byte {
	buf := bytes.NewBuffer(nil)
	buf.WriteByte(7)
	buf.WriteByte(uint8(len(msgs)))
	for _, m := range msgs {
		binary.Write(buf, binary.BigEndian, uint16(len(m)))
	}
	for _, m := range msgs {
		buf.Write(m)
	}
	return buf.Bytes()
}

func decodeAll(buf []byte) int {
	n := int(buf[1])
	buf = buf[2:]
	lens := make([]int, n)
	for i := 0; i < n; i++ {
		lens[i] = int(binary.BigEndian.Uint16(buf[2*i:]))
	}
	buf = buf[2*n:]
	ok := 0
	hd := codec.MsgpackHandle{}
	for _, l := range lens {
		part := buf[:l]
		buf = buf[l:]
		var err error
		switch part[0] {
		case 0:
			var p ping
			err = codec.NewDecoder(bytes.NewReader(part[1:]), &hd).Decode(&p)
		case 4:
			var a alive
			err = codec.NewDecoder(bytes.NewReader(part[1:]), &hd).Decode(&a)
		}
		if err == nil {
			ok++
		}
	}
	return ok
}

func once() int {
	msgs := [][]byte{encode(0, &ping{SeqNo: 4711, Node: "node-17.dc1", SourceAddr: net.IPv4(10, 0, 0, 1).To4(), SourcePort: 8301, SourceNode: "node-1.dc1"})}
	for i := 0; i < 10; i++ {
		msgs = append(msgs, encode(4, &alive{
			Incarnation: uint32(3 + i),
			Node:        fmt.Sprintf("node-%d.dc1", i),
			Addr:        net.IPv4(10, 0, 0, byte(i)).To4(),
			Port:        8301,
			Meta:        []byte{0xff, 0x81, 0xa4, 'r', 'o', 'l', 'e', 0xa4, 'n', 'o', 'd', 'e'},
			Vsn:         []uint8{1, 5, 2, 2, 5, 4},
		}))
	}
	return decodeAll(compound(msgs))
}

func main() {
	iters := flag.Int("iters", 200000, "iterations per repetition")
	reps := flag.Int("reps", 5, "repetitions (the median is reported)")
	flag.Parse()
	if once() != 11 {
		panic("round trip lost messages")
	}
	var runs []float64
	for r := 0; r < *reps; r++ {
		start := time.Now()
		for i := 0; i < *iters; i++ {
			once()
		}
		runs = append(runs, float64(time.Since(start).Nanoseconds())/float64(*iters))
	}
	sort.Float64s(runs)
	fmt.Printf("%.1f\n", runs[len(runs)/2])
}
