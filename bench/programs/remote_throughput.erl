%% Remote throughput: a sender spawned on the peer node sends 200,000 ints to the main
%% process on this node as fast as it can; the receiver checks they come in order and
%% times the stream from the first message to the last (and the whole, from the spawn).
%% Run by `tern-bench remote` as `erl -sname A ... -s remote_throughput main B` with
%% node B (same host) already up and this module and `remote_peer` on both nodes' code
%% path.
-module(remote_throughput).
-export([main/1, sender/2]).

-define(COUNT, 200000).

sender(To, Count) -> send_all(To, 0, Count).

send_all(_To, N, N) -> ok;
send_all(To, I, N) ->
    To ! I,
    send_all(To, I + 1, N).

recv_all(N, N) -> ok;
recv_all(I, N) ->
    receive
        I -> recv_all(I + 1, N);
        Other -> erlang:error({remote_throughput, expected, I, got, Other})
    end.

main([Peer]) ->
    Node = remote_peer:find(Peer),
    T0 = erlang:monotonic_time(microsecond),
    spawn(Node, ?MODULE, sender, [self(), ?COUNT]),
    receive
        0 -> ok;
        First -> erlang:error({remote_throughput, expected, 0, got, First})
    end,
    T1 = erlang:monotonic_time(microsecond),
    recv_all(1, ?COUNT),
    T2 = erlang:monotonic_time(microsecond),
    io:format("remote_throughput: count=~b first_us=~b stream_us=~b total_us=~b~n", [?COUNT, T1 - T0, T2 - T1, T2 - T0]).
