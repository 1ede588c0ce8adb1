%% Spawn: start 1,000,000 processes that each wait for one message, then send each of
%% them a message so that they all end. The spawn loop and the whole run are timed
%% inside the program (VM start-up excluded). The runner also measures the peak memory
%% of the OS process, and of the same program with the count set to 1, to get the
%% memory per idle process. Run with `erl +P 2000000` (the default limit is 1,048,576).
-module(spawn).
-export([main/0]).

-define(COUNT, 1000000). % bench:count (the runner sets this to 1 for its baseline)

waiter() ->
    receive
        _ -> ok
    end.

spawn_all(0, Acc) -> Acc;
spawn_all(N, Acc) -> spawn_all(N - 1, [spawn(fun waiter/0) | Acc]).

main() ->
    T0 = erlang:monotonic_time(microsecond),
    Pids = spawn_all(?COUNT, []),
    Spawned = erlang:monotonic_time(microsecond),
    lists:foreach(fun(Pid) -> Pid ! 0 end, Pids),
    Done = erlang:monotonic_time(microsecond),
    io:format("spawn: count=~b spawn_us=~b total_us=~b~n",
              [?COUNT, Spawned - T0, Done - T0]).
