%% Fib: naive doubly recursive Fibonacci; fib(32), computed 5 times.
-module(fib).
-export([main/0]).

fib(N) when N < 2 -> N;
fib(N) -> fib(N - 1) + fib(N - 2).

run(0, Result) -> Result;
run(I, _) ->
    case fib(32) of
        2178309 -> run(I - 1, 2178309);
        R -> erlang:error({fib, wrong_result, R})
    end.

main() ->
    io:format("~b~n", [run(5, 0)]).
