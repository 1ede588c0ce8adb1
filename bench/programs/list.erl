%% List (Are We Fast Yet): build linked lists and run the recursive Takeuchi-like
%% `tail` function on them; the result is the length of the returned list. The
%% linked lists are Erlang lists (cons cells): [Length, Length - 1, ..., 1].
-module(list).
-export([main/0]).

make_list(0) -> [];
make_list(Length) -> [Length | make_list(Length - 1)].

list_length([_]) -> 1;
list_length([_ | Next]) -> 1 + list_length(Next).

is_shorter_than(_, []) -> false;
is_shorter_than([], _) -> true;
is_shorter_than([_ | X], [_ | Y]) -> is_shorter_than(X, Y).

tail(X, Y, Z) ->
    case is_shorter_than(Y, X) of
        true ->
            tail(tail(tl(X), Y, Z), tail(tl(Y), Z, X), tail(tl(Z), X, Y));
        false ->
            Z
    end.

benchmark() ->
    list_length(tail(make_list(15), make_list(10), make_list(6))).

run(0, Total) -> Total;
run(I, Total) ->
    case benchmark() of
        10 -> run(I - 1, Total + 10);
        R -> erlang:error({list, wrong_result, R})
    end.

main() ->
    io:format("~b~n", [run(1500, 0)]).
