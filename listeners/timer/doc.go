// Package timer is switchyard's scheduler for [[timers]]: each Timer calls
// a Dispatcher every period, on a schedule fixed when it starts (tick n is
// due at start + n*every), so neither a slow tick nor a swap of the code
// behind the Dispatcher shifts it. Ticks of one timer never overlap: a tick
// that falls due while the previous one still runs is skipped and counted,
// and the next one keeps to the schedule.
package timer
