// Wraps and unwraps memberlist's `compress` message the way memberlist does
// (go-msgpack compress{Algo, Buf}, compress/lzw LSB with 8-bit literals),
// for cairn's LZW interoperability test.
//
//	lzw wrap   < payload          > compress message
//	lzw unwrap < compress message > payload
package main

import (
	"bytes"
	"compress/lzw"
	"io"
	"io/ioutil"
	"log"
	"os"

	"github.com/hashicorp/go-msgpack/codec"
)

type compress struct {
	Algo uint8
	Buf  []byte
}

func main() {
	in, err := ioutil.ReadAll(os.Stdin)
	if err != nil {
		log.Fatal(err)
	}
	hd := codec.MsgpackHandle{}
	switch os.Args[1] {
	case "wrap":
		var buf bytes.Buffer
		w := lzw.NewWriter(&buf, lzw.LSB, 8)
		w.Write(in)
		w.Close()
		out := bytes.NewBuffer([]byte{9}) // compressMsg
		if err := codec.NewEncoder(out, &hd).Encode(&compress{0, buf.Bytes()}); err != nil {
			log.Fatal(err)
		}
		os.Stdout.Write(out.Bytes())
	case "unwrap":
		if len(in) == 0 || in[0] != 9 {
			log.Fatal("not a compress message")
		}
		var c compress
		if err := codec.NewDecoder(bytes.NewReader(in[1:]), &hd).Decode(&c); err != nil {
			log.Fatal(err)
		}
		r := lzw.NewReader(bytes.NewReader(c.Buf), lzw.LSB, 8)
		if _, err := io.Copy(os.Stdout, r); err != nil {
			log.Fatal(err)
		}
	default:
		log.Fatal("usage: lzw wrap|unwrap")
	}
}
