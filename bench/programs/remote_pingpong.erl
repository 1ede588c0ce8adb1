%% Remote ping-pong: a process on this node and one spawned on the peer node send a
%% number back and forth, 1,000 rounds to warm up and then 20,000 timed ones (one round
%% trip is two messages, one each way between the nodes). Run by `tern-bench remote` as
%% `erl -sname A ... -s remote_pingpong main B` with node B (same host) already up and
%% this module and `remote_peer` on both nodes' code path; timed inside the program.
-module(remote_pingpong).
-export([main/1, ponger/1]).

-define(WARMUP, 1000).
-define(ROUNDS, 20000).

ponger(Peer) ->
    receive
        N ->
            Peer ! N,
            case N of
                0 -> ok;
                _ -> ponger(Peer)
            end
    end.

%% Sends From - 1 down to To and checks each comes back.
bounce(_Pong, To, To) -> ok;
bounce(Pong, From, To) ->
    I = From - 1,
    Pong ! I,
    receive
        I -> bounce(Pong, I, To);
        Other -> erlang:error({remote_pingpong, sent, I, got, Other})
    end.

main([Peer]) ->
    Node = remote_peer:find(Peer),
    Pong = spawn(Node, ?MODULE, ponger, [self()]),
    bounce(Pong, ?ROUNDS + ?WARMUP, ?ROUNDS),
    T0 = erlang:monotonic_time(microsecond),
    bounce(Pong, ?ROUNDS, 0),
    T = erlang:monotonic_time(microsecond) - T0,
    io:format("remote_pingpong: rounds=~b total_us=~b~n", [?ROUNDS, T]).
