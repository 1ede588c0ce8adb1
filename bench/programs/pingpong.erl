%% Ping-pong: two processes send a number back and forth 1,000,000 times (one round
%% trip is two messages). Timed inside the program (VM start-up excluded).
-module(pingpong).
-export([main/0]).

-define(ROUNDS, 1000000).

ponger(Peer) ->
    receive
        N ->
            Peer ! N,
            case N of
                0 -> ok;
                _ -> ponger(Peer)
            end
    end.

ping(_Pong, 0) -> ok;
ping(Pong, I0) ->
    I = I0 - 1,
    Pong ! I,
    receive
        I -> ping(Pong, I);
        Other -> erlang:error({pingpong, sent, I, got, Other})
    end.

main() ->
    Self = self(),
    Pong = spawn(fun() -> ponger(Self) end),
    T0 = erlang:monotonic_time(microsecond),
    ping(Pong, ?ROUNDS),
    T = erlang:monotonic_time(microsecond) - T0,
    io:format("pingpong: rounds=~b total_us=~b~n", [?ROUNDS, T]).
