package sdk

import (
	"sync"
	"sync/atomic"
)

// maxIdleWorkers bounds the goroutines a pool keeps waiting for work.
const maxIdleWorkers = 256

// pool runs calls on goroutines that it keeps for the next call. A fresh
// goroutine per call spends a good part of a small call growing its stack
// (measured: stack copying was the top of the plugin's profile under load);
// a reused one has grown already. At most maxIdleWorkers wait for work;
// stop ends them all.
type pool struct {
	work chan func()
	quit chan struct{}
	idle atomic.Int32
	wg   sync.WaitGroup
}

func newPool() *pool {
	return &pool{work: make(chan func()), quit: make(chan struct{})}
}

// run runs f on an idle worker, or on a new one.
func (p *pool) run(f func()) {
	select {
	case p.work <- f:
		return
	default:
	}
	p.wg.Add(1)
	go p.worker(f)
}

func (p *pool) worker(f func()) {
	defer p.wg.Done()
	for {
		f()
		if p.idle.Add(1) > maxIdleWorkers {
			p.idle.Add(-1)
			return
		}
		select {
		case f = <-p.work:
			p.idle.Add(-1)
		case <-p.quit:
			return
		}
	}
}

// stop ends the idle workers and waits for every worker to return. Call it
// once no more work comes.
func (p *pool) stop() {
	close(p.quit)
	p.wg.Wait()
}
