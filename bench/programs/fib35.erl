%% Fib35: naive doubly recursive Fibonacci; fib(35), computed once (issue 16's
%% target measure).
-module(fib35).
-export([main/0]).

fib(N) when N < 2 -> N;
fib(N) -> fib(N - 1) + fib(N - 2).

main() ->
    case fib(35) of
        9227465 -> io:format("~b~n", [9227465]);
        R -> erlang:error({fib35, wrong_result, R})
    end.
