package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/switchyard-dev/switchyard/plugins/sdk"
)

// cleanupTimeout bounds the Delete of a message whose envelope could not
// be stored.
const cleanupTimeout = 2 * time.Second

// envelope is what smtp stores under envelopes/ID for message ID.
type envelope struct {
	ID   string   `json:"id"`
	From string   `json:"from"` // the reverse path without brackets; "" for the null path
	To   []string `json:"to"`
	Helo string   `json:"helo"`
	// Remote is the client's address, "ip:port".
	Remote   string    `json:"remote"`
	Received time.Time `json:"received"`
	// Size is the message's length as the client sent it, after
	// dot-unstuffing, without the trace headers smtp adds.
	Size int64 `json:"size"`
}

// Block answers the message that followed DATA: it stores it, then
// answers 250 with its id, or answers why it did not. The transaction ends
// either way.
func (h handler) Block(c *sdk.Conn, b sdk.Block) {
	s := h.session(c)
	from, rcpts := s.State[keyFrom], s.recipients()
	inData := s.State[keyData] != ""
	s.reset()
	switch {
	case !inData || from == "" || len(rcpts) == 0:
		// Only a kernel that lost track of the session could send this.
		s.fail("503 5.5.1 Error: no message transaction")
		return
	case b.Overflow || int64(len(b.Data)) > s.cfg.maxSize:
		s.Replyf("552 5.3.4 Error: message too big (at most %d bytes)", s.cfg.maxSize)
		return
	}
	now := s.srv.now()
	id := s.srv.ids.next(now)
	env := envelope{
		ID:       id,
		From:     strings.TrimSuffix(strings.TrimPrefix(from, "<"), ">"),
		To:       rcpts,
		Helo:     s.State[keyHelo],
		Remote:   s.Remote,
		Received: now.UTC(),
		Size:     int64(len(b.Data)),
	}
	msg := s.message(env, b.Data)
	if err := s.store(c.Context(), env, msg); err != nil {
		c.Host().Logger().Error("smtp: message not stored", "id", id, "remote", s.Remote, "error", err)
		s.Reply("451 4.3.0 Error: message not stored, please try again")
		return
	}
	c.Host().Logger().Info("smtp: message queued", "id", id, "from", env.From, "recipients", len(rcpts), "size", env.Size, "remote", s.Remote)
	s.Replyf("250 2.0.0 Ok: queued as %s", id)
}

// message returns data as smtp stores it: after a Return-Path and a
// Received trace header (RFC 5321 section 4.4), the bytes as they arrived.
// The Received header names the recipient only when there is one, so that
// the copies of a message with several recipients do not disclose one of
// them to the others (section 7.6).
func (s *session) message(env envelope, data []byte) []byte {
	proto := s.State[keyProto]
	if proto == "" {
		proto = "SMTP"
	}
	remote := s.Remote
	if host, _, err := net.SplitHostPort(remote); err == nil {
		remote = "[" + host + "]"
	}
	var b bytes.Buffer
	b.Grow(len(data) + 512)
	fmt.Fprintf(&b, "Return-Path: <%s>\r\n", env.From)
	fmt.Fprintf(&b, "Received: from %s (%s)\r\n", env.Helo, remote)
	fmt.Fprintf(&b, "\tby %s (switchyard-smtp %s) with %s id %s", s.cfg.hostname, s.srv.version, proto, env.ID)
	if len(env.To) == 1 {
		fmt.Fprintf(&b, "\r\n\tfor <%s>", env.To[0])
	}
	fmt.Fprintf(&b, ";\r\n\t%s\r\n", env.Received.Local().Format(time.RFC1123Z))
	b.Write(data)
	return b.Bytes()
}

// store puts the message and then its envelope into the shared store, each
// durable when Put returns, so an envelope never names a message the store
// lacks. When the envelope cannot be stored, the message is deleted again:
// the client is told to retry, and a retry must not leave a copy behind.
func (s *session) store(ctx context.Context, env envelope, msg []byte) error {
	h := s.Host()
	if len(msg) > storeMaxValue {
		return fmt.Errorf("message of %d bytes with its headers is over the store's limit", len(msg))
	}
	envJSON, err := json.Marshal(env)
	if err != nil {
		return fmt.Errorf("encoding the envelope: %w", err)
	}
	if err := h.Put(ctx, messagePrefix+env.ID, msg); err != nil {
		return fmt.Errorf("storing the message: %w", err)
	}
	if err := h.Put(ctx, envelopePrefix+env.ID, envJSON); err != nil {
		// Clean up even when the event's deadline is what failed the Put.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		if derr := h.Delete(dctx, messagePrefix+env.ID); derr != nil {
			return fmt.Errorf("storing the envelope: %w (and deleting the message: %v)", err, derr)
		}
		return fmt.Errorf("storing the envelope: %w", err)
	}
	return nil
}
