/* minimal.c: the smallest complete chat.h program (README, "Use from C"). */
#include <stdio.h>
#include "chat.h"

int main(void) {
    static const char *to[] = {"everyone", "everyone but", "only"};
    chat_room *room = NULL;
    if (chat_room_new(NULL, 42, &room) != CHAT_STATUS_OK) return 1; /* NULL: default config */
    chat_room_join(room, 0, 1, "alice", 5, NULL);                     /* conn 1 asks for "alice" */
    chat_room_join(room, 0, 2, NULL, 0, NULL);                        /* conn 2 gets a random nick */
    chat_room_message(room, 10, 1, "hello", 5);                       /* text is pointer + length */
    chat_output out;
    while (chat_room_poll_output(room, &out) == CHAT_STATUS_OK)      /* deliver each output */
        printf("to %s %llu: %s\n", to[out.audience], (unsigned long long)out.audience_conn, out.line.ptr);
    chat_room_free(room);
    return 0;
}
