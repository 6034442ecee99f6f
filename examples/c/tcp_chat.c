/*
 * tcp_chat.c: one chat room served over plain TCP, a line per message, with only POSIX and
 * chat.h.
 *
 * Every connection joins with a random nickname (the room is seeded from the clock, so the
 * nicknames differ between runs) and gets the full defaults: a welcome line, join and leave
 * notices, /nick /me /who /help, history replay (shortened, see new_room) and a rate limit.
 * Each line a client sends (up to '\n', a trailing '\r' dropped) is one message; a last line
 * without '\n' before EOF is dropped. Empty lines are passed on like any other and the room
 * answers them with an error line; lines that are not UTF-8 get one from this server.
 *
 * Memory is bounded: a client's unfinished line may fill IN_MAX bytes (then it gets an error
 * and is disconnected), a client may have OUT_MAX bytes waiting to be sent (a client that
 * stops reading is disconnected), and at most MAX_CLIENTS are connected (fewer if the file
 * descriptor limit is lower); beyond that a connection gets an error line and is closed.
 *
 * Build:  make -C examples/c
 *   or:   cargo build --release -p chat-ffi &&
 *         cc -std=c11 -Wall -Wextra -Wpedantic -O2 -Iinclude examples/c/tcp_chat.c \
 *            target/release/libchat_ffi.a -lgcc_s -lutil -lrt -lpthread -lm -ldl -o tcp_chat
 * Run:    ./tcp_chat [PORT [ADDR]]    (PORT 7000 by default, 0 picks a free one;
 *                                      ADDR 127.0.0.1 by default, IPv4 only)
 *         It prints "listening on ADDR:PORT" once ready. SIGINT or SIGTERM (Ctrl-C) makes
 *         every member leave, frees everything and exits 0.
 * Try:    nc 127.0.0.1 7000           in two terminals, and type.
 */
#define _POSIX_C_SOURCE 200809L

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "chat.h"

#define DEFAULT_PORT 7000
#define MAX_CLIENTS 1000
#define RESERVED_FDS 16 /* stdio, listener, wake pipe, one to refuse with, and spare */
#define IN_MAX 8192     /* bytes of one unfinished input line */
#define OUT_MAX 65536   /* bytes waiting to be sent to one client */
#define LINGER_MS 2000  /* how long a closing connection may take to get its last lines */

struct client {
    int fd;             /* -1 once closed; the slot is freed at the top of the loop */
    uint64_t id;        /* the room's connection id */
    bool member;        /* in the room, receiving outputs; false while closing */
    bool doomed;        /* its output overflowed or failed mid-drain: drop after the drain */
    bool peer_done;     /* closing: the peer has sent EOF */
    bool shut;          /* closing: we have sent FIN */
    uint64_t close_by;  /* closing: give up on the peer at this time */
    size_t in_len;
    size_t out_start, out_end;
    char in[IN_MAX];
    char out[OUT_MAX];
};

struct server {
    chat_room *room;
    int listen_fd;
    struct client **slots; /* max_clients entries, NULL when free */
    struct pollfd *pfds;   /* wake pipe, listener, then one per slot (same index + 2) */
    size_t max_clients, nclients;
    uint64_t next_id;
    bool failed;
};

static volatile sig_atomic_t stop_requested;
static int wake_fd = -1;

static void on_signal(int signo) {
    (void)signo;
    int saved = errno;
    stop_requested = 1;
    /* A signal just before poll() would not interrupt it: the pipe wakes it instead. */
    if (write(wake_fd, "x", 1) < 0) {
        /* The pipe is full, so poll() will wake anyway. */
    }
    errno = saved;
}

static uint64_t now_ms(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) {
        abort(); /* POSIX guarantees CLOCK_MONOTONIC on the systems this runs on */
    }
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* A status only a bug can cause (in this file or the library): report it and stop. */
static void bug(struct server *s, const char *what, chat_status status) {
    fprintf(stderr, "tcp_chat: %s: %s\n", what, chat_status_str(status));
    s->failed = true;
}

static void close_fd(int fd) {
    if (close(fd) != 0) {
        perror("tcp_chat: close"); /* nothing to retry: the descriptor is gone either way */
    }
}

static bool set_nonblocking(int fd) {
    int flags = fcntl(fd, F_GETFL);
    return flags >= 0 && fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0;
}

/* Writes what the socket takes now. False if the connection is broken. */
static bool flush(struct client *c) {
    while (c->out_start < c->out_end) {
        ssize_t n = write(c->fd, c->out + c->out_start, c->out_end - c->out_start);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return errno == EAGAIN || errno == EWOULDBLOCK;
        }
        c->out_start += (size_t)n;
    }
    c->out_start = c->out_end = 0;
    return true;
}

/* Queues `line` and a newline for `c`; dooms `c` if they do not fit even after writing what
 * its socket takes now. Never blocks. */
static void queue_line(struct client *c, const char *line, size_t len) {
    if (c->doomed) {
        return;
    }
    if (OUT_MAX - c->out_end < len + 1) {
        if (!flush(c)) {
            c->doomed = true;
            return;
        }
        memmove(c->out, c->out + c->out_start, c->out_end - c->out_start);
        c->out_end -= c->out_start;
        c->out_start = 0;
        if (OUT_MAX - c->out_end < len + 1) {
            c->doomed = true;
            return;
        }
    }
    memcpy(c->out + c->out_end, line, len);
    c->out[c->out_end + len] = '\n';
    c->out_end += len + 1;
}

/* An error line of our own, formatted like the room's. */
static void queue_error(struct client *c, const char *reason) {
    char line[256];
    int len = snprintf(line, sizeof line, " .... error: %s", reason);
    if (len > 0) {
        queue_line(c, line, (size_t)len < sizeof line ? (size_t)len : sizeof line - 1);
    }
}

/* Whether member `conn` is in the output's audience (an unknown audience: nobody). */
static bool receives(const chat_output *out, uint64_t conn) {
    return out->audience == CHAT_AUDIENCE_EVERYONE ||
           (out->audience == CHAT_AUDIENCE_EVERYONE_EXCEPT && out->audience_conn != conn) ||
           (out->audience == CHAT_AUDIENCE_ONLY && out->audience_conn == conn);
}

static void leave(struct server *s, struct client *c) {
    if (c->member) {
        c->member = false;
        chat_status status = chat_room_leave(s->room, now_ms(), c->id);
        if (status != CHAT_STATUS_OK) {
            bug(s, "chat_room_leave", status);
        }
    }
}

static void close_now(struct server *s, struct client *c) {
    leave(s, c);
    close_fd(c->fd);
    c->fd = -1;
}

/* Delivers every queued output, then drops the clients that could not take theirs; their
 * leave notices are outputs too, hence the loop. */
static void drain(struct server *s) {
    for (;;) {
        chat_output out;
        chat_status status;
        while ((status = chat_room_poll_output(s->room, &out)) == CHAT_STATUS_OK) {
            for (size_t i = 0; i < s->max_clients; i++) {
                struct client *c = s->slots[i];
                if (c != NULL && c->member && receives(&out, c->id)) {
                    queue_line(c, out.line.ptr, out.line.len);
                }
            }
        }
        if (status != CHAT_STATUS_NO_OUTPUT) {
            bug(s, "chat_room_poll_output", status);
            return;
        }
        struct client *doomed = NULL;
        for (size_t i = 0; i < s->max_clients && doomed == NULL; i++) {
            struct client *c = s->slots[i];
            if (c != NULL && c->fd >= 0 && c->doomed) {
                doomed = c;
            }
        }
        if (doomed == NULL) {
            return;
        }
        close_now(s, doomed);
    }
}

/* Sends what is pending, then FIN, then waits for the peer's EOF before closing: closing
 * with unread input would reset the connection and could destroy the last lines. */
static void progress_close(struct client *c, short revents) {
    bool ok = flush(c);
    if (ok && c->out_start == c->out_end && !c->shut) {
        ok = shutdown(c->fd, SHUT_WR) == 0;
        c->shut = true;
    }
    if (ok && !c->peer_done && (revents & (POLLIN | POLLHUP | POLLERR))) {
        ssize_t n = read(c->fd, c->in, sizeof c->in); /* discarded */
        if (n == 0) {
            c->peer_done = true;
        } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            ok = false;
        }
    }
    if (!ok || (c->shut && c->peer_done) || now_ms() >= c->close_by) {
        close_fd(c->fd);
        c->fd = -1;
    }
}

static void start_closing(struct server *s, struct client *c, bool peer_done) {
    leave(s, c);
    c->peer_done = peer_done;
    c->close_by = now_ms() + LINGER_MS;
    drain(s);
    progress_close(c, 0);
}

static void send_line(struct server *s, struct client *c, const char *line, size_t len) {
    chat_status status = chat_room_message(s->room, now_ms(), c->id, line, len);
    if (status == CHAT_STATUS_INVALID_UTF8) {
        /* The room queues nothing for bytes it cannot read; answering is up to us. */
        queue_error(c, chat_status_str(status));
    } else if (status == CHAT_STATUS_NULL_PARAMETER || status == CHAT_STATUS_UNKNOWN_CONN ||
               status == CHAT_STATUS_PANIC) {
        bug(s, "chat_room_message", status);
    } /* else OK, or a broken rule whose error line is queued */
    drain(s);
}

static void handle_input(struct server *s, struct client *c) {
    ssize_t n = read(c->fd, c->in + c->in_len, IN_MAX - c->in_len);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            close_now(s, c);
            drain(s);
        }
        return;
    }
    if (n == 0) {
        start_closing(s, c, true); /* it may still read what we owe it */
        return;
    }
    size_t end = c->in_len + (size_t)n, start = 0, scan = c->in_len;
    c->in_len = end;
    char *nl;
    /* Only new bytes can hold a newline. Stop if the client is dropped (say its reply
     * overflowed). */
    while (c->member && (nl = memchr(c->in + scan, '\n', end - scan)) != NULL) {
        size_t len = (size_t)(nl - (c->in + start));
        if (len > 0 && c->in[start + len - 1] == '\r') {
            len--;
        }
        send_line(s, c, c->in + start, len);
        start = scan = (size_t)(nl - c->in) + 1;
    }
    if (!c->member) {
        return;
    }
    memmove(c->in, c->in + start, end - start);
    c->in_len = end - start;
    if (c->in_len == IN_MAX) {
        char reason[80];
        (void)snprintf(reason, sizeof reason, "line too long (no newline in %d bytes); closing",
                       IN_MAX);
        queue_error(c, reason);
        start_closing(s, c, false);
    }
}

/* Frees the clients closed since the last call. */
static void sweep(struct server *s) {
    for (size_t i = 0; i < s->max_clients; i++) {
        if (s->slots[i] != NULL && s->slots[i]->fd < 0) {
            free(s->slots[i]);
            s->slots[i] = NULL;
            s->nclients--;
        }
    }
}

static void accept_clients(struct server *s) {
    sweep(s); /* the slots of clients closed in this round are free for new ones */
    for (;;) {
        int fd = accept(s->listen_fd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                perror("tcp_chat: accept"); /* not EMFILE: max_clients keeps fds spare */
            }
            return;
        }
        struct client *c = NULL;
        if (s->nclients < s->max_clients && set_nonblocking(fd)) {
            c = calloc(1, sizeof *c);
        }
        if (c == NULL) {
            static const char full[] = " .... error: the server is full; try again later\n";
            if (write(fd, full, sizeof full - 1) < 0) {
                /* Best effort: the close tells it anyway. */
            }
            close_fd(fd);
            continue;
        }
        size_t i = 0;
        while (s->slots[i] != NULL) {
            i++; /* nclients < max_clients: a free slot exists */
        }
        s->slots[i] = c;
        s->nclients++;
        c->fd = fd;
        c->id = ++s->next_id;
        c->member = true;
        chat_status status = chat_room_join(s->room, now_ms(), c->id, NULL, 0, NULL);
        if (status != CHAT_STATUS_OK) {
            c->member = false; /* no member limit and no nickname: cannot happen */
            bug(s, "chat_room_join", status);
            close_now(s, c);
            return;
        }
        drain(s);
    }
}

/* Fills the poll set; returns the poll timeout (the nearest closing deadline). */
static int prepare_poll(struct server *s, int wake_read) {
    int timeout = -1;
    uint64_t now = now_ms();
    s->pfds[0] = (struct pollfd){.fd = wake_read, .events = POLLIN};
    s->pfds[1] = (struct pollfd){.fd = s->listen_fd, .events = POLLIN};
    sweep(s);
    for (size_t i = 0; i < s->max_clients; i++) {
        struct client *c = s->slots[i];
        struct pollfd *p = &s->pfds[2 + i];
        *p = (struct pollfd){.fd = -1}; /* poll() skips negative fds */
        if (c == NULL) {
            continue;
        }
        p->fd = c->fd;
        /* Input is read only from members and closing peers not yet at EOF; output is
         * watched only when some is pending, or poll() would spin. */
        p->events = (short)((c->member || !c->peer_done ? POLLIN : 0) |
                            (c->out_start < c->out_end ? POLLOUT : 0));
        if (!c->member) {
            int left = c->close_by > now ? (int)(c->close_by - now) : 0;
            timeout = timeout < 0 || left < timeout ? left : timeout;
        }
    }
    return timeout;
}

static void serve(struct server *s, int wake_read) {
    while (!stop_requested && !s->failed) {
        int timeout = prepare_poll(s, wake_read);
        if (poll(s->pfds, 2 + s->max_clients, timeout) < 0) {
            if (errno != EINTR) {
                perror("tcp_chat: poll");
                s->failed = true;
            }
            continue;
        }
        for (size_t i = 0; i < s->max_clients && !stop_requested; i++) {
            struct client *c = s->slots[i];
            short revents = s->pfds[2 + i].revents;
            if (c == NULL || c->fd < 0) {
                continue; /* free, or dropped earlier in this round */
            }
            if (!c->member) {
                progress_close(c, revents); /* also enforces the deadline */
            } else if ((revents & POLLOUT) && !flush(c)) {
                close_now(s, c);
                drain(s);
            } else if (revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL)) {
                handle_input(s, c);
            }
        }
        if (s->pfds[1].revents & POLLIN) {
            accept_clients(s);
        }
    }
}

/* Leaves every member (the others see each leave), then frees and closes everything. */
static void clean_up(struct server *s) {
    for (size_t i = 0; s->slots != NULL && i < s->max_clients; i++) {
        if (s->slots[i] != NULL) {
            leave(s, s->slots[i]);
            drain(s);
        }
    }
    for (size_t i = 0; s->slots != NULL && i < s->max_clients; i++) {
        struct client *c = s->slots[i];
        if (c != NULL && c->fd >= 0) {
            (void)flush(c); /* best effort: nobody waits for a slow client now */
            close_fd(c->fd);
        }
        free(c);
    }
    free(s->slots);
    free(s->pfds);
    chat_room_free(s->room);
    if (s->listen_fd >= 0) {
        close_fd(s->listen_fd);
    }
}

static int open_listener(const char *addr, unsigned port, char *shown, size_t shown_len) {
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, addr, &sin.sin_addr) != 1) {
        fprintf(stderr, "tcp_chat: not an IPv4 address: %s\n", addr);
        return -1;
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        perror("tcp_chat: socket");
        return -1;
    }
    int one = 1;
    socklen_t len = sizeof sin;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *)&sin, sizeof sin) != 0 || listen(fd, 128) != 0 ||
        !set_nonblocking(fd) || getsockname(fd, (struct sockaddr *)&sin, &len) != 0 ||
        inet_ntop(AF_INET, &sin.sin_addr, shown, (socklen_t)shown_len) == NULL) {
        perror("tcp_chat: listen");
        close_fd(fd);
        return -1;
    }
    size_t used = strlen(shown);
    (void)snprintf(shown + used, shown_len - used, ":%u", (unsigned)ntohs(sin.sin_port));
    return fd;
}

static bool install_handlers(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_signal; /* no SA_RESTART: poll() returns EINTR */
    if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0) {
        return false;
    }
    sa.sa_handler = SIG_IGN; /* a write to a closed peer fails with EPIPE instead */
    return sigaction(SIGPIPE, &sa, NULL) == 0;
}

/* The default room, seeded from the clock, with its history cut so that a joiner's replay
 * (queued all at once) fits half its output buffer: a line is at most a message and a nick. */
static chat_room *new_room(void) {
    chat_config config;
    struct timespec ts;
    chat_room *room = NULL;
    if (chat_config_default(&config) != CHAT_STATUS_OK ||
        clock_gettime(CLOCK_REALTIME, &ts) != 0) {
        return NULL;
    }
    config.history = OUT_MAX / 2 / (config.max_message_bytes + CHAT_MAX_NICK_LEN + 3);
    uint64_t seed = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    return chat_room_new(&config, seed, &room) == CHAT_STATUS_OK ? room : NULL;
}

int main(int argc, char **argv) {
    unsigned long port = DEFAULT_PORT;
    if (argc > 3 || (argc > 1 && (argv[1][0] < '0' || argv[1][0] > '9'))) {
        fprintf(stderr, "usage: tcp_chat [PORT [ADDR]]\n");
        return 2;
    }
    if (argc > 1) {
        char *end;
        errno = 0;
        port = strtoul(argv[1], &end, 10);
        if (errno != 0 || *end != '\0' || port > 65535) {
            fprintf(stderr, "tcp_chat: bad port: %s\n", argv[1]);
            return 2;
        }
    }

    struct server s = {.listen_fd = -1, .max_clients = MAX_CLIENTS};
    struct rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY &&
        limit.rlim_cur < MAX_CLIENTS + RESERVED_FDS) {
        s.max_clients = limit.rlim_cur > RESERVED_FDS + 1 ? limit.rlim_cur - RESERVED_FDS : 1;
    }

    int wake[2];
    if (pipe(wake) != 0) {
        perror("tcp_chat: pipe");
        return 1;
    }
    wake_fd = wake[1];
    char shown[INET_ADDRSTRLEN + 8];
    if (!set_nonblocking(wake[0]) || !set_nonblocking(wake[1]) || !install_handlers()) {
        perror("tcp_chat: signals");
        s.failed = true;
    } else if ((s.room = new_room()) == NULL) {
        fprintf(stderr, "tcp_chat: cannot create the room\n");
        s.failed = true;
    } else if ((s.slots = calloc(s.max_clients, sizeof *s.slots)) == NULL ||
               (s.pfds = calloc(s.max_clients + 2, sizeof *s.pfds)) == NULL) {
        perror("tcp_chat: calloc");
        s.failed = true;
    } else if ((s.listen_fd = open_listener(argc > 2 ? argv[2] : "127.0.0.1", (unsigned)port,
                                            shown, sizeof shown)) < 0) {
        s.failed = true;
    } else if (printf("listening on %s\n", shown) < 0 || fflush(stdout) != 0) {
        perror("tcp_chat: stdout");
        s.failed = true;
    }

    serve(&s, wake[0]);
    clean_up(&s);
    close_fd(wake[0]);
    close_fd(wake[1]);
    return s.failed ? 1 : 0;
}
