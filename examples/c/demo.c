/*
 * demo.c: the tutorial's chat scripted against chat.h, printing what each member sees.
 *
 * Three connections join and get random nicknames, every message reaches everyone as
 * "nick: text", bad input is refused with an error line to its sender only, and the others
 * are told when someone leaves. Build: see Makefile in this directory.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"

#define MEMBERS 3

/* Connection ids are ours to choose; the room only compares them. */
static const uint64_t conn_ids[MEMBERS] = {1, 2, 3};
static bool present[MEMBERS];
static char nicks[MEMBERS][CHAT_MAX_NICK_LEN + 1];

/* Exits with a message unless `status` is one of the two expected ones. */
static void expect(chat_status status, chat_status wanted, const char *what) {
    if (status != wanted) {
        fprintf(stderr, "%s: %s (wanted %s)\n", what, chat_status_str(status),
                chat_status_str(wanted));
        exit(1);
    }
}

/* Whether connection `conn` is in the output's audience. */
static bool receives(const chat_output *out, uint64_t conn) {
    switch (out->audience) {
    case CHAT_AUDIENCE_EVERYONE:
        return true;
    case CHAT_AUDIENCE_EVERYONE_EXCEPT:
        return out->audience_conn != conn;
    case CHAT_AUDIENCE_ONLY:
        return out->audience_conn == conn;
    default:
        return false;
    }
}

/* Drains the room, printing each output once per member who receives it. */
static void deliver(chat_room *room) {
    chat_output out;
    chat_status status;
    while ((status = chat_room_poll_output(room, &out)) == CHAT_STATUS_OK) {
        for (size_t i = 0; i < MEMBERS; i++) {
            if (present[i] && receives(&out, conn_ids[i])) {
                printf("  [%s sees] %s\n", nicks[i], out.line.ptr);
            }
        }
    }
    expect(status, CHAT_STATUS_NO_OUTPUT, "chat_room_poll_output");
}

/* Member `who` sends `len` bytes of `text`; `shown` is how the transcript prints them. */
static chat_status say(chat_room *room, uint64_t now_ms, size_t who, const char *text,
                       size_t len, const char *shown) {
    printf("%s types \"%s\"\n", nicks[who], shown);
    return chat_room_message(room, now_ms, conn_ids[who], text, len);
}

int main(void) {
    chat_config config;
    expect(chat_config_seed(&config), CHAT_STATUS_OK, "chat_config_seed");

    chat_room *room = NULL;
    expect(chat_room_new(&config, 2026, &room), CHAT_STATUS_OK, "chat_room_new");
    printf("a room with the tutorial's rules, seed 2026\n");

    for (size_t i = 0; i < MEMBERS; i++) {
        expect(chat_room_join(room, i, conn_ids[i], NULL, 0, NULL), CHAT_STATUS_OK,
               "chat_room_join");
        size_t len = 0;
        expect(chat_room_nick(room, conn_ids[i], nicks[i], sizeof nicks[i], &len), CHAT_STATUS_OK,
               "chat_room_nick");
        present[i] = true;
        printf("connection %llu joins as %s\n", (unsigned long long)conn_ids[i], nicks[i]);
        deliver(room);
    }

    const char *hello = "hello, everyone";
    expect(say(room, 1000, 0, hello, strlen(hello), hello), CHAT_STATUS_OK, "message");
    deliver(room);

    /* Not NUL-terminated: only the first 3 bytes are sent. */
    const char reply[] = {'h', 'i', '!', 'X', 'X'};
    expect(say(room, 1500, 1, reply, 3, "hi!"), CHAT_STATUS_OK, "message");
    deliver(room);

    const char *bell = "ring\a";
    chat_status status = say(room, 2000, 2, bell, strlen(bell), "ring\\a");
    printf("refused: %s\n", chat_status_str(status));
    expect(status, CHAT_STATUS_CONTROL_CHARACTER, "control character");
    deliver(room);

    const char *latin1 = "caf\xe9";
    status = say(room, 2500, 2, latin1, strlen(latin1), "caf\\xe9");
    printf("refused: %s\n", chat_status_str(status));
    expect(status, CHAT_STATUS_INVALID_UTF8, "invalid UTF-8");
    deliver(room);

    printf("%s leaves\n", nicks[1]);
    present[1] = false;
    expect(chat_room_leave(room, 3000, conn_ids[1]), CHAT_STATUS_OK, "chat_room_leave");
    deliver(room);

    const char *bye = "bye for now";
    expect(say(room, 3500, 2, bye, strlen(bye), bye), CHAT_STATUS_OK, "message");
    deliver(room);

    size_t count = 0;
    expect(chat_room_member_count(room, &count), CHAT_STATUS_OK, "chat_room_member_count");
    printf("%zu members left\n", count);

    chat_room_free(room);
    return 0;
}
