%% Ring: 10,000 processes (the main process and 9,999 spawned ones) in a ring, each
%% forwarding what it receives to the next. A token goes round 100 times (1,000,000
%% hops); its value counts the rounds left, and on the last round (value 0) every
%% process ends after passing it on. Building the ring and passing the token are timed
%% separately inside the program (VM start-up excluded).
-module(ring).
-export([main/0]).

-define(SIZE, 10000).
-define(ROUNDS, 100).

member(Next) ->
    receive
        Token ->
            Next ! Token,
            case Token of
                0 -> ok;
                _ -> member(Next)
            end
    end.

%% Spawn back to front so that each member is given its successor.
build(1, Next) -> Next;
build(I, Next) -> build(I - 1, spawn(fun() -> member(Next) end)).

pass(Next, Left, Laps) ->
    receive
        Left when Left =:= 0 -> Laps + 1;
        Left ->
            Next ! Left - 1,
            pass(Next, Left - 1, Laps + 1);
        Other ->
            erlang:error({ring, expected, Left, got, Other})
    end.

main() ->
    T0 = erlang:monotonic_time(microsecond),
    First = build(?SIZE, self()),
    Built = erlang:monotonic_time(microsecond),
    First ! ?ROUNDS - 1,
    Laps = pass(First, ?ROUNDS - 1, 0),
    Done = erlang:monotonic_time(microsecond),
    io:format("ring: size=~b rounds=~b hops=~b build_us=~b pass_us=~b~n",
              [?SIZE, Laps, Laps * ?SIZE, Built - T0, Done - Built]).
