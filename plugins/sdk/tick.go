package sdk

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/switchyard-dev/switchyard/plugins/proto"
)

// Tick is one run of a timer the kernel's configuration names in
// [[timers]]. The kernel keeps the schedule, so it carries on unchanged
// across swaps of the plugin; ticks of one timer never overlap, and one that
// falls due while the previous still runs is skipped and counted.
type Tick struct {
	Name      string    // the timer's name
	Scheduled time.Time // when the tick was due
	Count     uint64    // numbers the timer's ticks from 1, skipped ones included
	Skipped   uint64    // ticks of this timer skipped so far
}

func (s *callStream) startTick(id uint64, timeoutNS int64, t *proto.Tick) {
	f := s.svc.plugin.Tick
	if f == nil {
		_ = s.send(failure(id, "plugin serves no timer"))
		return
	}
	s.startSingle(id, timeoutNS, func(c *call) (*proto.Reply, error) {
		err := s.svc.tick(c.ctx, f, Tick{
			Name:      t.GetName(),
			Scheduled: time.Unix(0, t.GetScheduledUnixNano()),
			Count:     t.GetCount(),
			Skipped:   t.GetSkipped(),
		})
		if err != nil {
			return nil, err
		}
		return &proto.Reply{Frame: &proto.Reply_Tick{Tick: &proto.TickReply{}}}, nil
	})
}

// tick runs the plugin's Tick, turning a panic into an error.
func (s *service) tick(ctx context.Context, f func(context.Context, Tick) error, t Tick) (err error) {
	defer func() {
		if p := recover(); p != nil {
			s.logPanic("tick "+t.Name, p, debug.Stack())
			err = errors.New("tick panicked")
		}
	}()
	if err := f(ctx, t); err != nil {
		return fmt.Errorf("tick %s #%d: %w", t.Name, t.Count, err)
	}
	return nil
}
