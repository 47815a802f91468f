// Package systemd speaks the two systemd protocols a daemon needs: socket
// activation, by which the service manager binds the listening sockets and
// passes them to the process it starts (sd_listen_fds(3)), and readiness
// notification, by which the process tells the manager that it is ready,
// reloading, stopping or handing its role to another process (sd_notify(3)).
// It implements both from the manual pages, with no library, and does
// nothing when the process does not run under systemd.
//
// # Socket activation
//
// systemd passes a service LISTEN_FDS descriptors starting at 3, names them
// in LISTEN_FDNAMES (FileDescriptorName= of each socket unit, or the socket
// unit's name when that is not set) and sets LISTEN_PID to the pid they are
// meant for, so that a child that inherits the environment does not take
// them for its own. Listeners reads the three variables once, marks the
// descriptors close-on-exec, describes each (network and address, read from
// the socket itself) and unsets the variables. The kernel calls it before it
// binds anything and adopts a passed socket for the configured listener of
// the same name, or else of the same network and address; one name may
// cover several sockets (a DNS listener's UDP and TCP sockets). Passed
// sockets have no order to rely on: socket units are collected in no
// particular order.
//
// A process that plays the manager — a test, or the kernel handing its
// sockets to the new executable in an upgrade — uses Activate (or ListenEnv
// with a pid it knows). LISTEN_PID must be the pid of the process that reads
// it, which only exists after the fork, and os/exec cannot change the
// environment between fork and exec; Activate therefore runs the command
// through
//
//	/bin/sh -c 'LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@"' PROGRAM ARGS...
//
// in which the shell sets LISTEN_PID to its own pid and replaces itself by
// the program, keeping that pid and the inherited descriptors. This is what
// tests of socket-activated programs commonly do, and what systemd-socket-
// activate(1) does without a shell because it forks itself.
//
// # Notification
//
// Notify sends a state string to the datagram socket named by NOTIFY_SOCKET
// (a path, or an abstract name written with a leading '@'); Ready,
// Reloading, Stopping, MainPID and Status send the usual assignments. The
// kernel sends READY=1 once every listener is bound and every plugin was
// tried; RELOADING=1 when SIGHUP or ctl reload-config starts a configuration
// reload, then READY=1 when it is done, whatever its outcome; STOPPING=1
// when a graceful shutdown begins.
//
// An upgrade replaces the main process. The old kernel starts the new one
// (without Pdeathsig: it must outlive its parent), waits until the new one
// reports ready over the kernel's own channel, then — still the main process
// — sends MAINPID=<new pid> and drains and exits; from then on the new
// process is the main one and speaks for the service. This order works with
// NotifyAccess=main, which keeps plugin processes from speaking for the
// service; a new process that announced itself would need NotifyAccess=all.
// NOTIFY_SOCKET must stay in the new process's environment, so Notify does
// not unset it. contrib/switchyard.service is a unit that fits all of this.
//
// # Concurrency
//
// The package keeps no state. Listeners changes the process environment
// and is meant to be called once, early; Notify may be called from any
// goroutine. Env directs both at another environment, for tests.
package systemd
